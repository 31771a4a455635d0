"""Random container names in Docker's style: adjective_surname."""

from __future__ import annotations

import random

ADJECTIVES = [
    "admiring", "adoring", "affectionate", "agitated", "amazing", "angry", "awesome",
    "blissful", "bold", "boring", "brave", "busy", "charming", "clever", "compassionate",
    "competent", "confident", "cool", "cranky", "crazy", "dazzling", "determined",
    "distracted", "dreamy", "eager", "ecstatic", "elastic", "elated", "elegant", "eloquent",
    "epic", "exciting", "fervent", "festive", "flamboyant", "focused", "friendly", "frosty",
    "funny", "gallant", "gifted", "goofy", "gracious", "great", "happy", "hardcore",
    "heuristic", "hopeful", "hungry", "infallible", "inspiring", "intelligent", "interesting",
    "jolly", "jovial", "keen", "kind", "laughing", "loving", "lucid", "magical", "modest",
    "musing", "mystifying", "naughty", "nervous", "nice", "nifty", "nostalgic", "objective",
    "optimistic", "peaceful", "pedantic", "pensive", "practical", "priceless", "quirky",
    "quizzical", "recursing", "relaxed", "reverent", "romantic", "sad", "serene", "sharp",
    "silly", "sleepy", "stoic", "strange", "stupefied", "suspicious", "sweet", "tender",
    "thirsty", "trusting", "unruffled", "upbeat", "vibrant", "vigilant", "vigorous",
    "wizardly", "wonderful", "xenodochial", "youthful", "zealous", "zen",
]

# scientists and engineers, as in Docker's list
SURNAMES = [
    "agnesi", "albattani", "allen", "almeida", "archimedes", "babbage", "banach", "bardeen",
    "bartik", "bassi", "bell", "benz", "bhabha", "bohr", "booth", "borg", "bose", "brahmagupta",
    "brown", "cannon", "carson", "cerf", "chandrasekhar", "clarke", "curie", "darwin",
    "davinci", "dijkstra", "dirac", "easley", "einstein", "elion", "engelbart", "euclid",
    "euler", "fermat", "fermi", "feynman", "franklin", "galileo", "gauss", "goldberg",
    "goodall", "hamilton", "hawking", "heisenberg", "hertz", "hodgkin", "hopper", "hypatia",
    "jackson", "jang", "johnson", "kalam", "kepler", "khorana", "knuth", "kowalevski",
    "lamarr", "leakey", "lovelace", "lumiere", "mahavira", "mayer", "mccarthy", "mcclintock",
    "meitner", "mendel", "merkle", "mirzakhani", "montalcini", "moore", "morse", "napier",
    "newton", "nobel", "noether", "pare", "pascal", "pasteur", "perlman", "pike", "poincare",
    "ptolemy", "raman", "ramanujan", "ride", "ritchie", "rosalind", "sammet", "shannon",
    "shockley", "sinoussi", "stonebraker", "swartz", "tesla", "thompson", "torvalds", "turing",
    "villani", "wescoff", "wiles", "williams", "wilson", "wing", "wozniak", "wright", "yalow",
]


def random_name(with_number: bool = False) -> str:
    name = f"{random.choice(ADJECTIVES)}_{random.choice(SURNAMES)}"
    if with_number:
        name += str(random.randint(0, 9))
    return name
