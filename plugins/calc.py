"""calculate: arithmetic, functions and units, evaluated by a small parser of
its own. No eval, exec or ast: the grammar below is all the calculator
understands, so no input can reach Python. Size is bounded (characters,
tokens, nesting, digits of a result), so every input finishes quickly.

    2^10 / 8            sqrt(2) * 3         15% of 80           7 mod 3
    5 km in miles       60 mph to km/h      3 ft + 4 inch       100 F in C
    sin(30 deg)         1.5 GiB in MB       log(1000, 10)       20!
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.errors import ToolError

MAX_CHARS = 500
MAX_TOKENS = 250
MAX_DEPTH = 40
MAX_DIGITS = 1000  # of an exact integer result
MAX_FACTORIAL = 450  # 450! has 1,001 digits

Dims = tuple[tuple[str, int], ...]  # sorted (base dimension, exponent) pairs


class CalcError(ToolError):
    """The expression cannot be evaluated; the message says why."""


# ---------------------------------------------------------------- quantities


def _dims(**powers: int) -> Dims:
    return tuple(sorted((k, v) for k, v in powers.items() if v))


def _combine(a: Dims, b: Dims, sign: int) -> Dims:
    total = dict(a)
    for name, power in b:
        total[name] = total.get(name, 0) + sign * power
    return tuple(sorted((k, v) for k, v in total.items() if v))


Number = int | float


@dataclass(frozen=True)
class Quantity:
    value: Number  # in SI base units (kelvin for temperatures)
    dims: Dims = ()

    @property
    def plain(self) -> bool:
        return not self.dims


@dataclass(frozen=True)
class Unit:
    factor: float
    dims: Dims
    offset: float = 0.0  # only temperatures: kelvin = value * factor + offset


_L, _M, _T, _B = _dims(L=1), _dims(M=1), _dims(T=1), _dims(B=1)
_TEMP = _dims(K=1)


def _table() -> dict[str, Unit]:
    units: dict[str, Unit] = {}

    def add(names: str, factor: float, dims: Dims, offset: float = 0.0) -> None:
        for name in names.split():
            units[name] = Unit(factor, dims, offset)

    add("m meter meters metre metres", 1, _L)
    add("km kilometer kilometers kilometre kilometres", 1000, _L)
    add("cm centimeter centimeters", 0.01, _L)
    add("mm millimeter millimeters", 0.001, _L)
    add("um µm micrometer micrometers", 1e-6, _L)
    add("nm nanometer nanometers", 1e-9, _L)
    add("mi mile miles", 1609.344, _L)
    add("yd yard yards", 0.9144, _L)
    add("ft foot feet", 0.3048, _L)
    add("inch inches", 0.0254, _L)
    add("nmi", 1852, _L)
    add("kg kilogram kilograms kilo kilos", 1, _M)
    add("g gram grams", 0.001, _M)
    add("mg milligram milligrams", 1e-6, _M)
    add("t tonne tonnes", 1000, _M)
    add("lb lbs pound pounds", 0.45359237, _M)
    add("oz ounce ounces", 0.028349523125, _M)
    add("s sec secs second seconds", 1, _T)
    add("ms millisecond milliseconds", 0.001, _T)
    add("min mins minute minutes", 60, _T)
    add("h hr hrs hour hours", 3600, _T)
    add("day days", 86400, _T)
    add("week weeks", 604800, _T)
    add("year years", 31557600, _T)  # Julian year, 365.25 days
    volume = _dims(L=3)
    add("l L liter liters litre litres", 0.001, volume)
    add("ml mL milliliter milliliters", 1e-6, volume)
    add("gal gallon gallons", 0.003785411784, volume)  # US
    area = _dims(L=2)
    add("ha hectare hectares", 1e4, area)
    add("acre acres", 4046.8564224, area)
    speed = _dims(L=1, T=-1)
    add("kmh kph", 1000 / 3600, speed)
    add("mph", 1609.344 / 3600, speed)
    add("knot knots kn", 1852 / 3600, speed)
    add("B byte bytes", 1, _B)
    add("bit bits", 0.125, _B)
    for prefix, power in (("K", 1), ("k", 1), ("M", 2), ("G", 3), ("T", 4), ("P", 5)):
        add(f"{prefix}B", 1000.0**power, _B)
    for prefix, power in (("Ki", 1), ("Mi", 2), ("Gi", 3), ("Ti", 4)):
        add(f"{prefix}B", 1024.0**power, _B)
    energy = _dims(M=1, L=2, T=-2)
    add("J joule joules", 1, energy)
    add("kJ", 1000, energy)
    add("cal", 4.184, energy)
    add("kcal", 4184, energy)
    add("Wh", 3600, energy)
    add("kWh", 3.6e6, energy)
    power_dims = _dims(M=1, L=2, T=-3)
    add("W watt watts", 1, power_dims)
    add("kW", 1000, power_dims)
    add("deg degree degrees °", math.pi / 180, ())
    add("rad radian radians", 1, ())
    add("K kelvin", 1, _TEMP)
    add("C °C celsius", 1, _TEMP, 273.15)
    add("F °F fahrenheit", 5 / 9, _TEMP, 273.15 - 32 * 5 / 9)
    return units


UNITS = _table()
CONSTANTS: dict[str, float] = {"pi": math.pi, "π": math.pi, "e": math.e, "tau": math.tau}
KEYWORDS = frozenset({"in", "to", "as", "of", "mod"})


def _lookup_unit(name: str) -> Unit | None:
    return UNITS.get(name) or (UNITS.get(name.lower()) if len(name) > 3 else None)


# ---------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Token:
    kind: str  # num | name | op | end
    text: str
    value: Number = 0


_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<num>(?:\d[\d_]*)?\.?\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<name>°[CF]?|[A-Za-z_µπ][A-Za-z_0-9µ]*)"
    r"|(?P<op>\*\*|//|[-+*/^%(),!×÷−])"
    r")"
)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            bad = text[pos:].lstrip()[:1]
            raise CalcError(f"unexpected character {bad!r}; write numbers, + - * / ^, functions and units")
        pos = match.end()
        if match.group("num"):
            raw = match.group("num").replace("_", "")
            value: Number = float(raw) if any(c in raw for c in ".eE") else int(raw)
            tokens.append(Token("num", raw, value))
        elif match.group("name"):
            tokens.append(Token("name", match.group("name")))
        else:
            op = {"×": "*", "÷": "/", "−": "-", "**": "^"}.get(match.group("op"), match.group("op"))
            tokens.append(Token("op", op))
        if len(tokens) > MAX_TOKENS:
            raise CalcError(f"the expression is too long (more than {MAX_TOKENS} parts)")
    tokens.append(Token("end", ""))
    return tokens


# ---------------------------------------------------------------- arithmetic


def _checked(value: Number) -> Number:
    if isinstance(value, int):
        if value.bit_length() > MAX_DIGITS * 3.33:
            raise CalcError(f"the result has more than {MAX_DIGITS} digits")
        return value
    if math.isnan(value):
        raise CalcError("the result is not a number (for example 0/0 or sqrt of a negative)")
    if math.isinf(value):
        raise CalcError("the result is too large")
    return value


def _add(a: Quantity, b: Quantity, sign: int) -> Quantity:
    if a.dims != b.dims:
        raise CalcError("cannot add or subtract quantities of different kinds (for example metres and seconds)")
    return Quantity(_checked(a.value + sign * b.value), a.dims)


def _multiply(a: Quantity, b: Quantity) -> Quantity:
    return Quantity(_checked(a.value * b.value), _combine(a.dims, b.dims, 1))


def _divide(a: Quantity, b: Quantity) -> Quantity:
    if b.value == 0:
        raise CalcError("division by zero")
    if isinstance(a.value, int) and isinstance(b.value, int) and a.value % b.value == 0:
        value: Number = a.value // b.value
    else:
        value = a.value / b.value
    return Quantity(_checked(value), _combine(a.dims, b.dims, -1))


def _integer_op(a: Quantity, b: Quantity, op: str) -> Quantity:
    if not (a.plain and b.plain):
        raise CalcError(f"'{op}' needs plain numbers")
    if b.value == 0:
        raise CalcError("division by zero")
    value = a.value // b.value if op == "//" else a.value % b.value
    return Quantity(_checked(value))


def _power(base: Quantity, exponent: Quantity) -> Quantity:
    if not exponent.plain:
        raise CalcError("an exponent must be a plain number")
    e = exponent.value
    b = base.value
    if base.dims:
        if not float(e).is_integer() or abs(e) > 12:
            raise CalcError("a unit can only be raised to a small whole power")
        return Quantity(_checked(float(b) ** int(e)), tuple((k, v * int(e)) for k, v in base.dims))
    if b not in (0, 1, -1) and abs(e) * math.log10(abs(b)) > MAX_DIGITS:
        raise CalcError(f"the result would have more than {MAX_DIGITS} digits; that exponent is too large")
    try:
        if isinstance(b, int) and isinstance(e, int) and e >= 0:
            return Quantity(_checked(b**e))
        value = float(b) ** float(e)
    except (OverflowError, ZeroDivisionError):
        raise CalcError("the result is too large (or a division by zero)") from None
    if isinstance(value, complex):
        raise CalcError("the result is not a real number")
    return Quantity(_checked(value))


def _factorial(q: Quantity) -> Quantity:
    if not q.plain or not float(q.value).is_integer() or q.value < 0:
        raise CalcError("factorial needs a whole number of at least 0")
    if q.value > MAX_FACTORIAL:
        raise CalcError(f"factorial is limited to {MAX_FACTORIAL}!")
    return Quantity(math.factorial(int(q.value)))


def _plain_fn(fn: Callable[..., float]) -> Callable[[list[Quantity]], Quantity]:
    def apply(args: list[Quantity]) -> Quantity:
        if any(not a.plain for a in args):
            raise CalcError("this function needs plain numbers (convert units first)")
        try:
            return Quantity(_checked(fn(*(a.value for a in args))))
        except (ValueError, OverflowError) as exc:
            raise CalcError(f"math error: {exc}") from None

    return apply


def _sqrt(args: list[Quantity]) -> Quantity:
    (q,) = args
    if any(v % 2 for _, v in q.dims):
        raise CalcError("cannot take the square root of that unit")
    if q.value < 0:
        raise CalcError("the square root of a negative number is not real")
    root = math.isqrt(q.value) if isinstance(q.value, int) and math.isqrt(q.value) ** 2 == q.value else math.sqrt(q.value)
    return Quantity(root, tuple((k, v // 2) for k, v in q.dims))


def _same_kind(fn: Callable[..., Number]) -> Callable[[list[Quantity]], Quantity]:
    def apply(args: list[Quantity]) -> Quantity:
        if len({a.dims for a in args}) > 1:
            raise CalcError("the arguments must be of the same kind")
        return Quantity(fn(*(a.value for a in args)), args[0].dims)

    return apply


def _round(args: list[Quantity]) -> Quantity:
    if len(args) == 2 and (not args[1].plain or not float(args[1].value).is_integer()):
        raise CalcError("round(x, digits) needs whole digits")
    digits = int(args[1].value) if len(args) == 2 else 0
    value = round(args[0].value, max(-20, min(20, digits)))
    return Quantity(int(value) if digits <= 0 else value, args[0].dims)


def _log(*values: float) -> float:
    return math.log(values[0], values[1]) if len(values) == 2 else math.log(values[0])


FUNCTIONS: dict[str, tuple[Callable[[list[Quantity]], Quantity], int, int]] = {
    # name: (implementation, least arguments, most arguments)
    "sqrt": (_sqrt, 1, 1),
    "cbrt": (_plain_fn(lambda x: math.copysign(abs(x) ** (1 / 3), x)), 1, 1),
    "abs": (_same_kind(abs), 1, 1),
    "round": (_round, 1, 2),
    "floor": (_plain_fn(math.floor), 1, 1),
    "ceil": (_plain_fn(math.ceil), 1, 1),
    "exp": (_plain_fn(math.exp), 1, 1),
    "ln": (_plain_fn(math.log), 1, 1),
    "log": (_plain_fn(_log), 1, 2),
    "log10": (_plain_fn(math.log10), 1, 1),
    "log2": (_plain_fn(math.log2), 1, 1),
    "sin": (_plain_fn(math.sin), 1, 1),
    "cos": (_plain_fn(math.cos), 1, 1),
    "tan": (_plain_fn(math.tan), 1, 1),
    "asin": (_plain_fn(math.asin), 1, 1),
    "acos": (_plain_fn(math.acos), 1, 1),
    "atan": (_plain_fn(math.atan), 1, 1),
    "atan2": (_plain_fn(math.atan2), 2, 2),
    "sinh": (_plain_fn(math.sinh), 1, 1),
    "cosh": (_plain_fn(math.cosh), 1, 1),
    "tanh": (_plain_fn(math.tanh), 1, 1),
    "hypot": (_same_kind(math.hypot), 2, 2),
    "min": (_same_kind(min), 1, 20),
    "max": (_same_kind(max), 1, 20),
    "factorial": (lambda args: _factorial(args[0]), 1, 1),
}


# ---------------------------------------------------------------- parser


@dataclass
class _Parser:
    tokens: list[Token]
    pos: int = 0
    depth: int = 0
    seen_units: dict[Dims, str] = field(default_factory=dict)  # first unit of each kind, for display

    @property
    def token(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def at_op(self, *ops: str) -> bool:
        return self.token.kind == "op" and self.token.text in ops

    def at_name(self, *names: str) -> bool:
        return self.token.kind == "name" and self.token.text.lower() in names

    def starts_operand(self, token: Token | None = None) -> bool:
        token = token or self.token
        if token.kind == "num":
            return True
        if token.kind == "name":
            return token.text.lower() not in KEYWORDS
        return token.kind == "op" and token.text == "("

    def expect(self, op: str) -> None:
        if not self.at_op(op):
            found = self.token.text or "the end"
            raise CalcError(f"expected {op!r} but found {found!r}")
        self.take()

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CalcError("the expression is nested too deeply")

    # expression := sum (("in" | "to" | "as") unit-expression)?
    def conversion(self) -> tuple[Quantity, str | None, Unit | None]:
        value = self.sum()
        if self.at_name("in", "to", "as"):
            self.take()
            start = self.pos
            target = self.unit_expression()
            text = " ".join(t.text for t in self.tokens[start : self.pos]).replace(" / ", "/").replace(" ^ ", "^")
            return value, text, target
        return value, None, None

    def sum(self) -> Quantity:
        value = self.product()
        while self.at_op("+", "-"):
            sign = 1 if self.take().text == "+" else -1
            if self.percent_alone():
                # "200 + 10%" means 220, as on any pocket calculator.
                percent = self.take().value
                self.take()
                value = Quantity(_checked(value.value * (1 + sign * percent / 100)), value.dims)
                continue
            value = _add(value, self.product(), sign)
        return value

    def percent_alone(self) -> bool:
        """A bare "N%" term ends here (nothing multiplies or divides it)."""
        first, second, after = (self.tokens[self.pos : self.pos + 3] + [Token("end", "")] * 2)[:3]
        if first.kind != "num" or second.kind != "op" or second.text != "%":
            return False
        return after.kind == "end" or (after.kind == "op" and after.text in "+-)") or (
            after.kind == "name" and after.text.lower() in ("in", "to", "as")
        )

    def product(self) -> Quantity:
        value = self.juxtaposed()
        while True:
            if self.at_op("*") or self.at_name("of"):
                self.take()
                value = _multiply(value, self.juxtaposed())
            elif self.at_op("/"):
                self.take()
                value = _divide(value, self.juxtaposed())
            elif self.at_op("//") or self.at_name("mod") or (
                self.at_op("%") and self.starts_operand(self.tokens[self.pos + 1])
            ):
                op = "//" if self.take().text == "//" else "%"
                value = _integer_op(value, self.juxtaposed(), op)
            else:
                return value

    def juxtaposed(self) -> Quantity:
        """Implicit multiplication binds tighter than / : 5 km / 2 h is (5 km)/(2 h)."""
        value = self.unary()
        while self.starts_operand():
            value = _multiply(value, self.unary())
        return value

    def unary(self) -> Quantity:
        if self.at_op("-", "+"):
            sign = -1 if self.take().text == "-" else 1
            self.nested()
            operand = self.unary()
            self.depth -= 1
            return Quantity(sign * operand.value, operand.dims)
        return self.power()

    def power(self) -> Quantity:
        base = self.postfix()
        if self.at_op("^"):
            self.take()
            self.nested()
            exponent = self.unary()
            self.depth -= 1
            return _power(base, exponent)
        return base

    def postfix(self) -> Quantity:
        value = self.primary()
        while True:
            if self.at_op("!"):
                self.take()
                value = _factorial(value)
            elif self.at_op("%") and not self.starts_operand(self.tokens[self.pos + 1]):
                self.take()
                value = Quantity(value.value / 100, value.dims)  # 15% -> 0.15
            else:
                return value

    def primary(self) -> Quantity:
        token = self.token
        if token.kind == "num":
            self.take()
            if self.token.kind == "name" and _is_temperature(self.token.text):
                unit = _lookup_unit(self.take().text)
                assert unit is not None
                return Quantity(token.value * unit.factor + unit.offset, unit.dims)
            return Quantity(token.value)
        if self.at_op("("):
            self.take()
            self.nested()
            value = self.sum()
            self.depth -= 1
            self.expect(")")
            return value
        if token.kind == "name" and token.text.lower() not in KEYWORDS:
            self.take()
            return self.named(token.text)
        found = token.text or "the end"
        raise CalcError(f"expected a number, a function or a unit but found {found!r}")

    def named(self, name: str) -> Quantity:
        if self.at_op("(") and name.lower() in FUNCTIONS:
            return self.call(name.lower())
        if name in CONSTANTS:
            return Quantity(CONSTANTS[name])
        unit = _lookup_unit(name)
        if unit is not None:
            if unit.offset or unit.dims == _TEMP:
                raise CalcError("write temperatures as a number and a unit, like 20 C or 68 F")
            self.seen_units.setdefault(unit.dims, name)
            return Quantity(unit.factor, unit.dims)
        if name.lower() in FUNCTIONS:
            raise CalcError(f"{name} is a function: write {name}(x)")
        raise CalcError(f"unknown name {name!r}")

    def call(self, name: str) -> Quantity:
        implementation, least, most = FUNCTIONS[name]
        self.expect("(")
        self.nested()
        args = [self.sum()]
        while self.at_op(","):
            self.take()
            args.append(self.sum())
        self.depth -= 1
        self.expect(")")
        if not least <= len(args) <= most:
            raise CalcError(f"{name} takes {least if least == most else f'{least} to {most}'} argument(s)")
        return implementation(args)

    # unit-expression := unit (("*" | "/") unit | "^" integer)*
    def unit_expression(self) -> Unit:
        unit = self.unit_name()
        while True:
            if self.at_op("^"):
                self.take()
                power = self.take()
                if power.kind != "num" or not isinstance(power.value, int):
                    raise CalcError("a unit power must be a whole number")
                unit = Unit(unit.factor**power.value, tuple((k, v * power.value) for k, v in unit.dims))
            elif self.at_op("*", "/"):
                sign = 1 if self.take().text == "*" else -1
                other = self.unit_name()
                unit = Unit(unit.factor * other.factor**sign, _combine(unit.dims, other.dims, sign))
            else:
                return unit

    def unit_name(self) -> Unit:
        token = self.take()
        unit = _lookup_unit(token.text) if token.kind == "name" else None
        if unit is None:
            raise CalcError(f"unknown unit {token.text or 'at the end'!r}")
        return unit


def _is_temperature(name: str) -> bool:
    unit = _lookup_unit(name)
    return unit is not None and unit.dims == _TEMP


# ---------------------------------------------------------------- formatting


def format_number(value: Number) -> str:
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}"


_SI_NAMES: dict[Dims, str] = {
    _L: "m",
    _M: "kg",
    _T: "s",
    _B: "B",
    _dims(L=2): "m^2",
    _dims(L=3): "m^3",
    _dims(L=1, T=-1): "m/s",
    _dims(L=1, T=-2): "m/s^2",
    _dims(M=1, L=2, T=-2): "J",
    _dims(M=1, L=2, T=-3): "W",
    _dims(T=-1): "1/s",
}


def _display(q: Quantity, parser: _Parser, target: str | None, unit: Unit | None) -> str:
    if unit is not None and target is not None:
        if unit.dims != q.dims:
            raise CalcError(f"cannot convert to {target}: it measures something else")
        value = (q.value - unit.offset) / unit.factor
        return f"{format_number(_checked(float(value)))} {target}"
    if q.dims == _TEMP:
        return f"{format_number(q.value - 273.15)} °C"
    if q.plain:
        return format_number(q.value)
    if q.dims in parser.seen_units:
        name = parser.seen_units[q.dims]
        shown = _lookup_unit(name)
        assert shown is not None
        return f"{format_number(_checked(q.value / shown.factor))} {name}"
    name = _SI_NAMES.get(q.dims) or "·".join(f"{k}^{v}" if v != 1 else k for k, v in q.dims)
    return f"{format_number(q.value)} {name}"


def evaluate(expression: str) -> str:
    """The result of ``expression`` as text; raises CalcError with a reason."""
    text = expression.strip()
    if not text:
        raise CalcError("the expression is empty")
    if len(text) > MAX_CHARS:
        raise CalcError(f"the expression is longer than {MAX_CHARS} characters")
    if "=" in text.rstrip("="):
        raise CalcError("write only the expression, without '=' or assignments")
    parser = _Parser(tokenize(text.rstrip("=")))
    value, target, unit = parser.conversion()
    if parser.token.kind != "end":
        raise CalcError(f"unexpected {parser.token.text!r}")
    return _display(value, parser, target, unit)


# ---------------------------------------------------------------- the tool


def calculate(expression: str) -> str:
    """Evaluate arithmetic exactly: + - * / ^ (power), // and mod, n!, percentages
    ("15% of 80"), functions (sqrt, log, ln, sin, cos, tan, round, min, max, abs, exp...),
    constants (pi, e) and units with conversion ("5 km in miles", "60 mph to km/h",
    "100 F in C", "1.5 GiB in MB"). Use it for any calculation instead of mental math.

    Args:
        expression: the expression, e.g. "(3.5 + 2) * 4^2" or "3 ft + 4 inch in cm"
    """
    return f"{expression.strip()} = {evaluate(expression)}"


def register_tools(register: Callable[..., object]) -> None:
    register(calculate, hints={"en": "calculating…", "ru": "считаю…"})
