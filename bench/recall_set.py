"""Evaluation set for memory recall: stored facts about a user and the later
questions that need them, in English and Russian.

Written by hand for the memory-recall benchmark (bench/), not taken from any
public dataset, and kept apart from the unit tests: nothing under tests/
imports it.

- CASES: one stored fact and one later question for which that fact is the
  memory the assistant needs. Facts mostly follow the extractor's style (a
  short statement about the user without "the user" or a pronoun); about a
  third are first-person, as the `remember` tool stores them. `shares_word`
  says whether the question was written to share a content word (or a form of
  its root) with its fact; the benchmark computes the overlap itself too.
- DISTRACTORS: further true-sounding facts that no question asks for. About a
  third are near misses: same person, topic or words as a target fact, but
  not an answer to its question.
- UNANSWERABLE: messages that no stored fact is relevant to; they measure how
  many memories get injected when none should be.

Every question has exactly one right fact across CASES and DISTRACTORS.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    fact: str  # the stored memory the question needs
    question: str  # what the user asks later
    language: str  # "en" | "ru"
    shares_word: bool  # the question shares a content word (or its root) with the fact


def _en(fact: str, question: str, shares_word: bool) -> Case:
    return Case(fact, question, "en", shares_word)


def _ru(fact: str, question: str, shares_word: bool) -> Case:
    return Case(fact, question, "ru", shares_word)


_EN_CASES: list[Case] = [
    # family
    _en("Has a daughter, Lisa, born in 2019", "How old is my daughter now?", True),
    _en("Wife Anna paints watercolours in her spare time", "Suggest a birthday present for my wife.", True),
    _en("Son Oliver is studying computer science in Edinburgh", "Which city is my son at university in?", True),
    _en("Brother Mark lives in Toronto", "Which city does my brother live in again?", True),
    _en("My mum's name is Margaret", "What's my mother called?", False),
    _en("Grandmother lives in a care home in Bath", "Where does my nan stay these days?", False),
    _en("Best friend Sam is getting married in September", "Help me write a toast for my best friend's wedding.", True),
    _en("Wedding anniversary is 9 July 2011", "How long have I been married?", False),
    _en("Takes Lisa to school at 8:15 on weekdays", "What time do I need to leave for the school run?", True),
    # pets
    _en("My dog is a beagle called Biscuit", "What breed is my pup?", False),
    _en("My cat Luna is scared of the vacuum cleaner", "Why does my cat hide every time I clean?", True),
    # work, home, money
    _en("Works as a nurse at the city hospital", "Remind me, what's my profession?", False),
    _en("Cycles to work along the canal", "How do I usually get to work?", True),
    _en("My boss is called Linda", "Draft an email to my manager asking for Friday off.", False),
    _en("Lives in Bristol", "What's the weather going to be like where I live?", True),
    _en("Neighbour Paul has a spare key to the flat", "If I get locked out, who can let me in?", False),
    _en("My rent is £1,100 a month", "Remind me how much rent I pay each month.", True),
    _en("Saving up for a deposit on a flat", "Remind me what I'm saving for.", True),
    _en("I bank with Monzo", "Which app do I use for banking?", True),
    _en("Studied history at Leeds University", "What subject was my degree in?", False),
    # health and diet
    _en("Allergic to peanuts", "Is this satay sauce safe for me to eat?", False),
    _en("Vegetarian for the past five years", "Would a steakhouse be a good place for my dinner out tonight?", False),
    _en("Lactose intolerant", "Is a latte with regular milk okay for me?", False),
    _en("Takes blood pressure pills every morning", "I keep forgetting my medication - when am I supposed to have it?", False),
    _en("I can't stand coriander", "Should I put coriander in this salsa?", True),
    _en("Doesn't drink alcohol", "Suggest a cocktail for Friday night.", False),
    _en("Colour-blind (red-green)", "Is it a good idea to use a red and green colour scheme on my slides?", True),
    _en("Terrified of spiders", "There's a huge spider in my bath and I can't cope, help!", True),
    _en("Afraid of flying", "Any tips for staying calm on a plane?", False),
    _en("I drink two cups of black coffee before noon", "How much coffee do I have a day?", True),
    # hobbies, sport, culture
    _en("Plays tennis every Saturday morning", "Which sport do I do at weekends?", False),
    _en("Runs 5 km three times a week", "Build me a half-marathon plan based on my current running.", True),
    _en("Supports Liverpool FC", "Did my team win last night?", False),
    _en("Favourite band is Arctic Monkeys", "Is my favourite band touring this year?", True),
    _en("I've played the piano since I was a child", "Find me some sheet music for my instrument.", False),
    _en("Reading 'The Brothers Karamazov' right now", "What novel am I in the middle of?", False),
    _en("Favourite film is 'Spirited Away'", "Recommend something to watch that's like my all-time top movie.", False),
    _en("Watching 'Breaking Bad' for the first time", "What series am I currently bingeing?", False),
    _en("Took up pottery classes in January", "What's my new hobby this year?", False),
    _en("Grows tomatoes on the balcony", "My tomato plants have yellow leaves, what's wrong?", True),
    _en("Makes sourdough bread every Sunday", "My starter smells like nail polish, is that okay?", False),
    _en("Volunteers at an animal shelter on Wednesdays", "Am I busy on Wednesdays?", True),
    # languages
    _en("Learning Japanese, currently at JLPT N4 level", "Give me a few practice sentences for the language I'm studying.", False),
    _en("Speaks fluent German", "Could I read Kafka in the original?", False),
    # vehicles, devices, accounts
    _en("Drives a blue Toyota Corolla", "I need new wiper blades - which model should I look for?", False),
    _en("My car insurance expires on 30 April", "When do I need to renew my insurance?", True),
    _en("Uses an iPhone 13", "How do I take a screenshot on my mobile?", False),
    _en("My laptop is a ThinkPad X1 Carbon", "My laptop won't charge, what should I check?", True),
    _en("My password manager is Bitwarden", "Where do I keep my passwords?", True),
    # dates, schedule, travel
    _en("My birthday is 22 August", "Do you remember when my birthday is?", True),
    _en("My dentist appointment is on 12 November at 9:30", "I'm going to the dentist again, when was that?", True),
    _en("My gym membership renews on the 1st of every month", "When will the gym take money from my card again?", True),
    _en("I usually go to bed at 11 and get up at 6:45", "What time should I set my alarm for?", False),
    _en("Flying to Lisbon on 3 June for a week's holiday", "What should I pack for my trip to Portugal?", False),
    _en("My passport expires in March 2026", "Is my passport still valid next year?", True),
    _en("My shoe size is 44 EU", "What size trainers should I order?", True),
    # how the assistant should answer
    _en("I prefer short answers without bullet points", "How should you format replies to me?", False),
    _en("Prefers metric units", "How far is it from London to Paris?", False),
]

_RU_CASES: list[Case] = [
    # семья
    _ru("Сестра Катя живёт в Казани", "В каком городе живёт моя сестра?", True),
    _ru("Жена Ольга увлекается керамикой", "Посоветуй подарок жене на годовщину", True),
    _ru("Сын Ваня учится во втором классе", "В каком классе сейчас сын?", True),
    _ru("Брат Андрей работает программистом в Яндексе", "Чем занимается мой брат?", True),
    _ru("Мою маму зовут Людмила Петровна", "Напомни, как зовут маму?", True),
    _ru("Бабушка живёт в деревне под Вологдой", "Какая сейчас погода у бабушки?", True),
    _ru("Лучшая подруга Наташа выходит замуж в сентябре", "Помоги написать тост на свадьбу подруги", True),
    _ru("Забирает дочку из садика в 18:00", "Во сколько мне забирать дочку?", True),
    _ru("Племянник Даня увлекается динозаврами", "Что подарить племяннику на день рождения?", True),
    # питомцы
    _ru("Мой пёс — лабрадор по кличке Барни", "Какой породы моя собака?", False),
    _ru("Мой попугай Кеша боится темноты", "Почему попугай кричит, когда я выключаю свет?", True),
    # работа, дом, деньги
    _ru("Работает учителем математики в школе", "Кем я работаю?", True),
    _ru("На работу добирается на электричке", "Как я обычно езжу на работу?", True),
    _ru("Начальника зовут Игорь Викторович", "Составь письмо руководителю с просьбой об отгуле", False),
    _ru("Живет в Екатеринбурге", "Какая погода сегодня у меня в городе?", False),
    _ru("Запасные ключи оставляет соседке Галине Ивановне", "Кто присмотрит за цветами, пока я в отпуске?", False),
    _ru("Я снимаю квартиру за 45 тысяч в месяц", "Сколько я плачу за квартиру?", True),
    _ru("Откладывает деньги на первый взнос по ипотеке", "На что я коплю?", False),
    _ru("Моя зарплатная карта в Тинькофф", "Каким банком я пользуюсь?", False),
    _ru("Кредит за машину выплачивает до 2026 года", "Когда я рассчитаюсь с банком за авто?", False),
    _ru("Окончил экономический факультет МГУ", "Какое у меня образование?", False),
    # здоровье и еда
    _ru("Аллергия на кошачью шерсть", "Можно ли мне переночевать у коллеги, у которой три мейн-куна?", False),
    _ru("Вегетарианец уже пять лет", "Закажу на пикник шашлык на всех — мне тоже брать?", False),
    _ru("Непереносимость лактозы", "Можно мне капучино на обычном молоке?", False),
    _ru("Принимает таблетки от давления по утрам", "Когда мне пить лекарство?", False),
    _ru("Я терпеть не могу оливки", "Класть ли оливки в салат, если готовлю на себя?", True),
    _ru("Не пьет алкоголь", "Что заказать мне в баре в пятницу?", False),
    _ru("Дальтоник", "Смогу ли я работать электриком, если провода надо отличать по цвету?", False),
    _ru("Я до ужаса боюсь пауков", "В ванной огромный паук, что мне делать?!", True),
    _ru("Боится летать на самолётах", "Как успокоиться перед рейсом?", False),
    _ru("Я пью три чашки кофе в день", "Сколько кофе я обычно выпиваю?", True),
    # хобби, спорт, культура
    _ru("Ходит в бассейн по вторникам и четвергам", "В какие дни я плаваю?", False),
    _ru("Бегает по утрам 5 километров", "Составь план подготовки к полумарафону с учётом того, сколько я бегаю сейчас", True),
    _ru("Болеет за «Зенит»", "Как сыграла вчера моя команда?", False),
    _ru("Любимая группа — «Кино»", "Какую музыку мне включить в дорогу?", False),
    _ru("Играет на гитаре с 15 лет", "Подбери мне аккорды к какой-нибудь песне", False),
    _ru("Читает «Мастера и Маргариту»", "Какую книгу я сейчас читаю?", True),
    _ru("Любимый фильм — «Москва слезам не верит»", "Посоветуй кино, похожее на то, что мне нравится больше всего", False),
    _ru("Смотрит сериал «Во все тяжкие»", "Какой сериал я сейчас смотрю?", True),
    _ru("С января занимается бальными танцами", "Какое новое хобби у меня появилось в этом году?", False),
    _ru("Выращивает огурцы на даче", "Почему у огурцов желтеют листья?", True),
    _ru("По выходным печёт пироги с капустой", "С какой начинкой я обычно делаю пироги?", True),
    _ru("По средам волонтёрит в приюте для животных", "Я свободен в среду вечером?", True),
    # языки
    _ru("Учит испанский язык", "Составь мне упражнения по языку, который я изучаю", True),
    _ru("Свободно говорит по-немецки", "Смогу ли я читать Гёте в оригинале?", False),
    # машина, техника, аккаунты
    _ru("Ездит на сером Hyundai Solaris", "Какая у меня машина?", False),
    _ru("Моя страховка ОСАГО заканчивается 1 марта", "Когда продлевать страховку на машину?", True),
    _ru("Пользуется Samsung Galaxy S21", "Как сделать снимок экрана на моём мобильном?", False),
    _ru("Мой ноутбук — MacBook Air 2020 года", "Ноутбук стал тормозить, что можно сделать?", True),
    _ru("Все пароли я храню в KeePass", "Где у меня лежат логины от сайтов?", False),
    # даты, распорядок, поездки
    _ru("Мой день рождения 5 мая", "Когда у меня день рождения?", True),
    _ru("Я записан к стоматологу на 14 ноября, 10:00", "Когда мне к зубному?", False),
    _ru("Мой абонемент в спортзал заканчивается 31 декабря", "Когда продлевать абонемент?", True),
    _ru("Встает в 6:00, ложится около полуночи", "На какое время завести будильник?", False),
    _ru("В июле летит в Анапу на две недели", "Что взять с собой на море?", False),
    _ru("Мой загранпаспорт действует до 2027 года", "Когда истекает срок моего загранпаспорта?", True),
    _ru("У меня 42-й размер обуви", "Какой размер кроссовок мне заказать?", True),
    # как отвечать
    _ru("Мне удобнее, когда ответы короткие и без списков", "Как тебе оформлять сообщения для меня?", False),
    _ru("Мне приятнее, когда со мной общаются на «ты»", "Как ко мне лучше обращаться?", False),
]

CASES: list[Case] = _EN_CASES + _RU_CASES

DISTRACTORS: list[str] = [
    # --- English: near misses (same person, topic or words as a target fact) ---
    "My sister Kate lives in Glasgow",
    "Brother Mark works as an electrician",
    "Brother Mark is allergic to shellfish",
    "Daughter Lisa loves dinosaurs",
    "Wife Anna grew up in Cork",
    "Son Oliver plays bass in a student band",
    "Son Oliver's birthday is 2 February",
    "Mum's birthday is 3 May",
    "Father Richard retired from the police in 2020",
    "My grandfather was a coal miner",
    "Colleague Priya is getting married next spring",
    "School holidays start on 22 July",
    "My dog Biscuit is terrified of fireworks",
    "Luna the cat sleeps on the radiator all winter",
    "Passed the driving test on the third attempt",
    "My car is due for its MOT in October",
    "Watched the Wimbledon final from Centre Court in 2019",
    "Did two years of French at school and forgot most of it",
    "The dentist's surgery is on Oak Street",
    "Tried growing chillies last year but they all died",
    "My rent went up by £50 last year",
    "Is saving receipts for a tax return",
    "The gym is a ten-minute walk from home",
    "Neighbours upstairs are very noisy",
    "Wears medium-size T-shirts",
    "Phone case is dark blue",
    "I read mostly on a Kindle",
    "I went to Lisbon for a conference in 2018",
    "Volunteered at a food bank during university",
    "Prefers tea in the evening",
    "Gets hay fever every June",
    "Doesn't like horror films",
    # --- English: unrelated ---
    "Was born in Sheffield",
    "I'm left-handed",
    "Has a small compass tattoo on the left wrist",
    "Can't whistle",
    "Enjoys cryptic crosswords",
    "I collect vinyl records",
    "Hates queueing",
    "Owns a sewing machine but rarely uses it",
    "I prefer window seats on trains",
    "Keeps succulents on the bathroom windowsill",
    "I've never been to the United States",
    "Once met Paul McCartney at an airport",
    "Favourite board game is Catan",
    "Is trying to cut down on screen time",
    "Has a scar on the chin from a childhood fall",
    "Goes camping in the Lake District every summer",
    "Cousin Emma is a vet",
    "Likes very spicy curries",
    "My hair is naturally curly",
    "Wears glasses for driving",
    "Scared of deep water",
    "Favourite takeaway is pizza",
    "Writes in a diary every evening",
    "Plays chess online against old school friends",
    "I was a Scout as a child",
    "Wants to learn to sail one day",
    "Has a Nintendo Switch",
    "Goes birdwatching with dad in spring",
    "Cooks a big curry for friends once a month",
    "Wears an old Casio watch",
    "Spent childhood summers on an uncle's farm",
    "My favourite season is autumn",
    "I can touch-type",
    "I'm terrible at remembering names",
    "Uncle Steve runs a pub in Leeds",
    # --- Russian: near misses ---
    "Мой брат Андрей живёт в Москве",
    "Сестра Катя любит рисовать акварелью",
    "Жена Ольга родом из Омска",
    "Сын Ваня боится собак",
    "Моя дочка Аня занимается гимнастикой",
    "Мама в прошлом году вышла на пенсию",
    "Мой дедушка был военным лётчиком",
    "Бабушкин дом отапливается печкой",
    "Племянница Соня учится в Петербурге",
    "Отец работает инженером на заводе",
    "В молодости работал официантом",
    "Коллега Марина выходит замуж весной",
    "Мечтает когда-нибудь пересесть на электромобиль",
    "В школе учил французский, но почти всё забыл",
    "Бассейн в десяти минутах ходьбы от дома",
    "Стоматолога зовут Ирина Сергеевна",
    "Спортзал работает круглосуточно",
    "Я не люблю ужастики",
    "Сосед сверху по вечерам играет на барабанах",
    "Огурцы с дачи солит на зиму",
    "Коллега недавно взяла ипотеку",
    "Внутренний паспорт менял в 2021 году",
    "Друг Костя держит дома паука-птицееда",
    "Книги предпочитает бумажные, а не электронные",
    "Начальник часто затягивает планёрки",
    "Квартира на девятом этаже",
    "Квартиру ни разу не страховал",
    "Я в Анапе уже был в 2015 году",
    "Приют для животных находится на окраине города",
    "Зарплату получает 10 и 25 числа",
    "Вечером вместо кофе пьёт травяной чай",
    "У меня аллергия на пыльцу берёзы",
    "Носит одежду 50-го размера",
    "Терпеть не может стоять в пробках",
    "Разводит фиалки на подоконнике",
    # --- Russian: unrelated ---
    "Родился в Барнауле",
    "Левша",
    "Любит собирать грибы",
    "Коллекционирует значки",
    "По выходным играет с отцом в шахматы",
    "Каждое лето сплавляется с друзьями по рекам Алтая",
    "Не любит шумные компании",
    "Ведёт дневник",
    "Мой любимый цвет — синий",
    "В детстве занимался карате",
    "Мечтает увидеть северное сияние",
    "Ходит в баню по субботам",
    "Не любит разговаривать по телефону",
    "Обожает квашеную капусту",
    "Спит с открытым окном",
    "Я служил в армии в Мурманске",
    "Знает наизусть много стихов Есенина",
    "Плохо запоминает имена",
    "Умеет вязать крючком",
    "Разбирается в ремонте стиральных машин",
    "Я собираю советские монеты",
    "Любит ходить в походы с палаткой",
    "Носит очки с седьмого класса",
    "Мне лучше думается на прогулках",
    "Любимое время года — осень",
    "Хорошо готовит овощное рагу",
    "Дважды был в Грузии",
    "Я катаюсь на лыжах каждую зиму",
    "Хорошо рисует карикатуры",
]

UNANSWERABLE: list[tuple[str, str]] = [
    ("What's the capital of Peru?", "en"),
    ("How do I boil an egg?", "en"),
    ("What time is it in Tokyo right now?", "en"),
    ("Explain how photosynthesis works.", "en"),
    ("Write a haiku about the sea.", "en"),
    ("Who wrote 'Pride and Prejudice'?", "en"),
    ("What's the difference between a virus and a bacterium?", "en"),
    ("Translate 'good morning' into Italian.", "en"),
    ("How many planets are there in the solar system?", "en"),
    ("Tell me a joke about penguins.", "en"),
    ("What does HTTP stand for?", "en"),
    ("Summarise the plot of Hamlet in three sentences.", "en"),
    ("Why is the sky blue?", "en"),
    ("How do I reverse a list in Python?", "en"),
    ("Give me a name for a dragon in a fantasy story.", "en"),
    ("How long does sunlight take to reach the Earth?", "en"),
    ("hello! how's it going?", "en"),
    ("Какая столица Перу?", "ru"),
    ("напиши стихотворение про дождь", "ru"),
    ("Как сварить яйцо всмятку?", "ru"),
    ("Сколько сейчас времени в Токио?", "ru"),
    ("Объясни, что такое фотосинтез", "ru"),
    ("Кто написал «Войну и мир»?", "ru"),
    ("Переведи на английский «доброе утро»", "ru"),
    ("Сколько планет в Солнечной системе?", "ru"),
    ("Расскажи анекдот про пингвинов", "ru"),
    ("Почему небо голубое?", "ru"),
    ("Как развернуть список в Python?", "ru"),
    ("Чем вирус отличается от бактерии?", "ru"),
    ("Какая самая высокая гора в мире?", "ru"),
    ("Перескажи кратко сюжет «Евгения Онегина»", "ru"),
    ("Сколько будет 17 умножить на 23?", "ru"),
    ("Придумай имя для дракона в сказке", "ru"),
    ("Привет! Как дела?", "ru"),
]
