"""A small retrieval-quality set for memory recall: facts a user told the bot,
and questions that ask for them in other words, in English and Russian.
Every question has one target fact; the other facts are distractors. Written
by hand for this benchmark."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    text: str
    target: str
    language: str  # en | ru


def _pairs(language: str, pairs: list[tuple[str, str]]) -> list[Question]:
    return [Question(question, fact, language) for fact, question in pairs]


QUESTIONS: list[Question] = _pairs(
    "en",
    [
        ("My daughter Lisa is seven years old", "How old is my kid?"),
        ("I work as a nurse at the city hospital", "What's my profession?"),
        ("I am allergic to peanuts", "Which foods should I avoid?"),
        ("My car is a blue Toyota Corolla", "What vehicle do I drive?"),
        ("My sister Emma lives in Toronto", "Where is my sister based?"),
        ("I prefer short answers without emojis", "How do I like your replies formatted?"),
        ("My wife's name is Julia", "What is my spouse called?"),
        ("I have a golden retriever named Max", "Do I have any pets?"),
        ("I am learning Spanish for a trip to Mexico", "Which language am I studying?"),
        ("My birthday is on March 14", "When was I born?"),
        ("I run a half marathon every spring", "What sport do I do?"),
        ("I don't drink coffee, only green tea", "What hot drink do I like?"),
        ("My favourite band is Radiohead", "What music do I listen to?"),
        ("I live in a flat in Manchester", "Which city is my home?"),
        ("My son Tom plays chess at school", "What hobby does my boy have?"),
        ("I am vegetarian", "Do I eat meat?"),
        ("My dentist appointment is on December 3", "When do I see the dentist?"),
        ("I use a MacBook for work", "What computer do I use?"),
        ("My manager is called David", "Who is my boss?"),
        ("I grew up in a small village in Wales", "Where did I spend my childhood?"),
    ],
) + _pairs(
    "ru",
    [
        ("Моя сестра Катя живёт в Казани", "В каком городе живёт сестра?"),
        ("Я работаю учителем в школе", "Кем я работаю?"),
        ("Моего кота зовут Барсик", "Как зовут моего кота?"),
        ("Я не ем мясо", "Я вегетарианец?"),
        ("У меня аллергия на орехи", "На что у меня аллергия?"),
        ("Мой сын Миша ходит в первый класс", "В каком классе учится сын?"),
        ("Я люблю джаз и блюз", "Какую музыку я люблю?"),
        ("Моя жена Ольга работает врачом", "Кем работает жена?"),
        ("Я езжу на красной Шкоде", "На какой машине я езжу?"),
        ("Мой день рождения 5 мая", "Когда у меня день рождения?"),
        ("Я учу немецкий язык", "Какой язык я изучаю?"),
        ("Я живу в Новосибирске", "В каком городе я живу?"),
        ("Мама живёт в деревне под Тверью", "Где живёт моя мама?"),
        ("Я бегаю по утрам три раза в неделю", "Как часто я бегаю?"),
        ("Мой начальник Сергей Петрович", "Как зовут начальника?"),
        ("Я пью только зелёный чай", "Какой чай я пью?"),
        ("Я болею за Спартак", "За какую команду я болею?"),
        ("У меня собака породы корги", "Какая у меня собака?"),
        ("Я предпочитаю короткие ответы", "Какие ответы мне нравятся?"),
        ("Летом мы едем в отпуск в Сочи", "Куда мы поедем летом?"),
    ],
)

# Distractors: true-sounding facts no question asks for.
FACTS: list[str] = [
    "I bought a new bicycle last week",
    "My neighbour plays the piano every evening",
    "I keep my passwords in a password manager",
    "I visited Rome in 2019",
    "I usually wake up at 6:30",
    "My grandmother makes the best apple pie",
    "I am saving money for a new kitchen",
    "I watched every season of The Office",
    "My phone is an old Android",
    "I prefer window seats on planes",
    "Я купил новый велосипед на прошлой неделе",
    "Сосед по вечерам играет на пианино",
    "Я был в Риме в 2019 году",
    "Обычно я встаю в половине седьмого",
    "Бабушка печёт лучший яблочный пирог",
    "Я коплю на новую кухню",
    "Мой телефон — старый Android",
    "В самолёте я люблю сидеть у окна",
    "Я читаю детективы перед сном",
    "По выходным я езжу на дачу",
]
