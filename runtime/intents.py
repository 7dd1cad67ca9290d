"""Spoken requests to the device, parsed from the words a window reading heard: a small slot
grammar of the four assist intents (the templates in GRAMMAR, the answers in ANSWERS)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from soundflow.runtime.agreement import key

# The grammar, as data. A template is words, `(a|b)` alternatives, `[a b]` optional parts and
# `{slot}` slots (their words in SLOTS; `{level}` a number, `{duration}` a number and a unit),
# `<macro>`s (MACROS); `{name=value}` sets a slot without reading a word. A clause is answered where one template
# reads all of it, after fillers and a wake phrase are taken off its ends, with at most
# MAX_SKIPS words the template does not know (a misreading, an aside).
MACROS = {
    "<bit>": "[(a|the) (bit|little|little bit)]",
    "<where>": "[in the {room}|{where}]",
    "<away>": "[while i was (out|away|gone|asleep)]",
}
GRAMMAR: dict[str, list[str]] = {
    "lights": [
        "(turn|switch|flip|put|shut) {state} [all] [the|my] [{room}] lights <where>",
        "(turn|switch|flip|put|shut) [all] [the|my] [{room}] lights {state} <where>",
        "(kill|cut) {state=off} [all] [the|my] [{room}] lights <where>",
        "(turn|switch) the lights in the {room} {state}",
        "[all] [the] [{room}] lights {state} <where>",
        "(dim|darken|lower) {state=dim} [all] [the] [{room}] lights <where> <bit>",
        "(turn|bring) down {state=dim} [all] [the] [{room}] lights <where>",
        "(turn|switch) [the] [{room}] lights down {state=dim} <bit>",
    ],
    "timer": [
        "(set|start|put on|make|give me) {action=set} [a|the|me a] timer (for|to|of) {duration}",
        "(set|put|start) {action=set} [a|the] timer on for {duration}",
        "(set|start|put on|make) {action=set} [a|an|me a] {duration} timer",
        "[a|an] {duration} timer {action=set}",
        "[a|the] timer {action=set} [for] {duration}",
        "(time|count down|remind me in|wake me in) {action=set} {duration}",
        "(cancel|stop|clear|delete|end|turn off|switch off) {action=cancel} [the|my|that] timer",
        "timer (off|cancel|stop) {action=cancel}",
    ],
    "volume": [
        "(turn|crank|bring|put) [the] {thing} {way} <bit>",
        "(turn|crank|bring|put) {way} the {thing} <bit>",
        "[the] {thing} {way} <bit>",
        "[make it|make the {thing}] <bit> {louder} <bit>",
        "(raise|increase|boost) {way=up} the {thing} <bit>",
        "(lower|decrease|reduce) {way=down} the {thing} <bit>",
        "mute {way=mute} [the] [{thing}]",
        "unmute {way=unmute} [the] [{thing}]",
        "(set|put|turn) {way=level} the {thing} (to|at) {level}",
        "{thing} [to] {way=level} {level}",
    ],
    "history": [
        "(what was|what's|what s|what is) {about=sound} that [{noise}] [just now|outside|there]",
        "what was that i just heard {about=sound}",
        "what did i just hear {about=sound}",
        "did i miss anything {about=alert} [important] <away>",
        "did (anything|something) happen {about=alert} [just now|<away>]",
        "what happened {about=alert} [just now|<away>]",
        "(was there|did you hear) {about=alert} (an|any) alarm [just now|<away>]",
        "did (an|any) alarm go off {about=alert}",
        "[sorry] what did {who} [just] say {about=speech}",
    ],
}


def _same(words: str) -> dict[str, str]:
    return {w: w for w in words.split("|")}


# Slot words: each slot's words (one or two) and the value it records ("": none).
SLOTS: dict[str, dict[str, str]] = {
    "state": {"on": "on", "off": "off", "of": "off"},  # "turn of the lights": Whisper
    "room": _same(
        "kitchen|bedroom|bathroom|hallway|hall|office|garage|basement|nursery|porch|garden|"
        "study|attic|living room|dining room|front room|guest room|kids room"
    ),
    "where": {"in here": "", "here": "", "everywhere": "", "in the house": ""},
    "thing": {w: "" for w in ("volume", "sound", "music", "tv", "radio", "it", "speaker", "audio")},
    "way": {"up": "up", "down": "down", "higher": "up", "lower": "down"},
    "louder": {"louder": "up", "quieter": "down", "softer": "down", "more quiet": "down"},
    "noise": {
        w: ""
        for w in "noise|sound|bang|beep|beeping|crash|thud|knock|knocking|ringing|buzzing|"
        "alarm|noise there".split("|")
    },
    "unit": {u + p: u for u in ("second", "minute", "hour") for p in ("", "s")},
    "who": _same("he|she|they"),
}
SLOT_FILLS = {"louder": "way"}  # a slot that records its value under another name
# Words and phrases taken off a clause's ends (and "please", "just" anywhere): politeness, a
# wake phrase, hesitations.
FILLERS = (
    "please", "hey", "hi", "ok", "okay", "so", "um", "uh", "er", "now", "right now", "just",
    "kindly", "thanks", "thank you", "for me", "could you", "can you", "would you", "will you",
    "would you please", "i want you to", "i'd like you to", "i need you to", "go ahead and",
    "hey flow", "ok flow", "okay flow", "a flow", "flow", "hey soundflow", "soundflow",
    "i need", "i want", "i'd like", "alright",
    "all right", "quickly", "real quick", "oh",
)  # fmt: skip
ANYWHERE = ("please", "just", "kindly")
# A clause with one of these words is about something else (the past, someone, a negation):
# it is told, not asked for, and stays quiet. History's own questions are read first.
NARRATION = frozenset(
    "yesterday ago last was were had has have did didn't doesn't don't dont never not always "
    "usually when because while after before said says told asked forgot wanted tried "
    "turned switched started dimmed cancelled canceled muted he she they we i his her their "
    "sister brother mom dad who if should would".split()
)
HISTORY_OK = frozenset("was did i he she they while".split())  # its questions use them
# Common misreadings and variant spellings of the grammar's words (Whisper's, as keys).
ALIASES = {
    "lites": "lights", "light": "lights", "lamp": "lights", "lamps": "lights",
    "light's": "lights", "lights'": "lights", "lice": "lights", "lighs": "lights",
    "mins": "minutes", "min": "minute",
    "secs": "seconds", "sec": "second", "hrs": "hours", "hr": "hour", "timers": "timer",
    "flo": "flow", "volumes": "volume", "t.v": "tv", "everything": "anything",
    "livingroom": "living room", "diningroom": "dining room",
}  # fmt: skip
# ... and at a request's start only, where the word itself would be narration ("she said")
START_ALIASES = {"said": "set", "sat": "set"}
NUMBERS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen".split()
    )
} | {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "ninety": 90}
NUMBERS |= {"seventy": 70, "eighty": 80}
HOMOPHONES = {"for": 4, "to": 2, "too": 2, "ate": 8, "won": 1}  # read where a number must be
MAX_SKIPS = 1
FUZZY_LEN = 5  # template words this long also match a reading one letter off

# The answers, in one place: where training has the request, its answer word for word
# (train/data/text.py: "timer set for five minutes", "turning the lights off", "volume down";
# `soundflow eval` scores exact matches), and in its style where training has no such slot.
# A key is the request's state, action or way, then " room" where a room was named.
ANSWERS: dict[str, dict[str, str]] = {
    "lights": {
        "on": "turning the lights on",
        "off": "turning the lights off",
        "dim": "dimming the lights",
        "on room": "turning on the {room} lights",
        "off room": "turning off the {room} lights",
        "dim room": "dimming the {room} lights",
    },
    "timer": {"set": "timer set for {duration}", "cancel": "timer cancelled"},
    "volume": {
        "up": "volume up",
        "down": "volume down",
        "mute": "muting the sound",
        "unmute": "unmuting the sound",
        "level": "volume set to {level}",
    },
    # history: what the stream heard (`context`), or that it heard none of it
    "history": {
        "sound": "that was {sound}",
        "no sound": "i did not hear anything unusual",
        "alert": "yes earlier i heard {alert}",
        "no alert": "no nothing important happened",
        "speech": "{who} said {said}",
        "no speech": "i did not hear {whom} say anything",
    },
}
WHOM = {"he": "him", "she": "her", "they": "them"}
# The bundle's tagger labels (runtime/tagger.py) as history answers name them.
SOUNDS = {
    "alarm": "an alarm", "baby_cry": "a baby crying", "car_horn": "a car horn",
    "co_alarm": "a carbon monoxide alarm", "crash": "something crashing",
    "doorbell": "the doorbell", "explosion": "a loud bang", "glass_break": "glass breaking",
    "kettle_whistle": "the kettle whistling", "phone_ring": "a phone ringing",
    "shout_for_help": "someone shouting for help", "siren": "a siren",
    "smoke_alarm": "a smoke alarm", "aircraft": "an aircraft", "applause": "people clapping",
    "bell": "a bell", "bird_chirp": "birds chirping", "camera_shutter": "a camera shutter",
    "cash_register": "a cash register", "clock_tick": "a clock ticking",
    "cough": "someone coughing", "dishes": "dishes clinking", "dog_bark": "a dog barking",
    "electric_sparking": "electric sparking", "engine": "an engine running",
    "footsteps": "footsteps", "helicopter": "a helicopter", "impact": "something hitting",
    "jackhammer": "a jackhammer", "kettle_boil": "the kettle boiling",
    "knock": "someone knocking", "machinery": "machinery", "microwave_beep": "the microwave",
    "music": "some music", "notification_chime": "a notification chime",
    "paper_crumple": "paper crumpling", "phone_busy_tone": "a busy tone",
    "power_saw": "a power saw", "ship_horn": "a ship's horn", "steam_hiss": "steam hissing",
    "train": "a train", "typing": "someone typing", "vacuum": "a vacuum cleaner",
    "water_tap": "water running",
}  # fmt: skip


@dataclass(frozen=True)
class Intent:
    """A request parsed from the words: `name` (lights, timer, volume, history), its `slots`,
    `text` (the clause's words as read) and the `answer` (None for history: the stream names
    what it heard, `answer(name, slots, context)`, or without a tagger the decoder does)."""

    name: str
    slots: dict[str, str] = field(default_factory=dict)
    text: str = ""
    answer: str | None = None

    @property
    def tag(self) -> str:
        return f"<intent:{self.name}>"

    @property
    def identity(self) -> tuple:
        """What a second answer to the same request would repeat."""
        return (self.name, tuple(sorted(self.slots.items())))


def number_words(n: int) -> str:
    """1..99 in words ("twenty five"); larger numbers as digits."""
    names = {v: k for k, v in NUMBERS.items()}
    if n in names:
        return names[n]
    if 20 < n < 100:
        return f"{names[n // 10 * 10]} {names[n % 10]}"
    return str(n)


def answer(name: str, slots: dict[str, str], context: dict[str, str] | None = None) -> str | None:
    """The answer to a request. History's needs what the stream heard: `context` "sound"
    (the newest sound's label), "alert" (the newest alert's label), "said" (the words
    before the question); None where the stream has not given it yet."""
    table = ANSWERS[name]
    if name == "history":
        if context is None:
            return None
        about = slots["about"]
        heard = context.get(about if about != "speech" else "said")
        if about in ("sound", "alert") and heard:
            heard = SOUNDS.get(heard, heard.replace("_", " "))
        who = slots.get("who", "they")
        fmt = table[about] if heard else table[f"no {about}"]
        return fmt.format(**{about: heard, "said": heard, "who": who, "whom": WHOM[who]})
    what = slots.get("state") or slots.get("action") or slots.get("way") or ""
    return table[f"{what} room" if "room" in slots else what].format(**slots)


# ---------------------------------------------------------------------- templates
def _tokens(template: str) -> list[str]:
    for macro, text in MACROS.items():
        template = template.replace(macro, text)
    return re.findall(r"\{[^}]*\}|[()\[\]|]|[^\s()\[\]|{}]+", template)


def _expand(tokens: list[str]) -> list[tuple[str, ...]]:
    """Every word sequence a template reads (alternatives and optional parts spelled out)."""

    def seq(i: int, closer: str | None) -> tuple[list[list[str]], int]:
        alts: list[list[list[str]]] = [[[]]]  # alternatives, each a list of sequences
        while i < len(tokens):
            t = tokens[i]
            if t in ")]":
                assert t == closer, f"unbalanced template: {' '.join(tokens)}"
                break
            if t == "|":
                alts.append([[]])
                i += 1
                continue
            if t in "([":
                inner, i = seq(i + 1, ")" if t == "(" else "]")
                options = inner + ([[]] if t == "[" else [])
                alts[-1] = [a + b for a in alts[-1] for b in options]
            else:
                alts[-1] = [a + [t] for a in alts[-1]]
            i += 1
        return [s for a in alts for s in a], i

    out, _ = seq(0, None)
    return [tuple(s) for s in out]


@lru_cache(maxsize=1)
def _compiled() -> list[tuple[str, tuple[str, ...]]]:
    rules = [(name, s) for name, ts in GRAMMAR.items() for t in ts for s in _expand(_tokens(t))]
    return sorted(set(rules), key=lambda r: -len(r[1]))


def _close(a: str, b: str) -> bool:
    """b (read) is a, or one letter off a long template word."""
    if a == b:
        return True
    if len(a) < FUZZY_LEN or abs(len(a) - len(b)) > 1 or not b.isalpha():
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    s, t = (a, b) if len(a) < len(b) else (b, a)
    return any(t[:i] + t[i + 1 :] == s for i in range(len(t)))


def _number(words: list[str], j: int) -> tuple[int, int] | None:
    """(value, words read) of a number at words[j]: digits, one or two words, "a"/"an"."""
    w = words[j] if j < len(words) else ""
    if w.isdigit():
        return int(w), 1
    if w in ("a", "an"):
        return 1, 1
    if w in HOMOPHONES and (j + 1 == len(words) or words[j + 1] in SLOTS["unit"]):
        return HOMOPHONES[w], 1  # "volume to for": a number where one must be
    if w in NUMBERS:
        n = NUMBERS[w]
        if 20 <= n < 100 and j + 1 < len(words) and 0 < NUMBERS.get(words[j + 1], 0) < 10:
            return n + NUMBERS[words[j + 1]], 2
        return n, 1
    return None


def _slot(name: str, words: list[str], j: int) -> list[tuple[dict[str, str], int]]:
    """The ways slot `name` may read words[j:]: (values, words read)."""
    if name == "n" or name == "level":
        got = _number(words, j)
        if got is None or (name == "level" and words[j] in ("a", "an")):
            return []
        return [({name: number_words(got[0])}, got[1])]
    if name == "duration":
        if words[j : j + 3] == ["half", "an", "hour"]:
            return [({"duration": "thirty minutes", "seconds": "1800"}, 3)]
        got = _number(words, j)
        if got is None:
            return []
        n, used = got
        unit = SLOTS["unit"].get(words[j + used] if j + used < len(words) else "")
        if unit is None or n < 1:
            return []
        spoken = f"{number_words(n)} {unit}{'' if n == 1 else 's'}"
        seconds = n * {"second": 1, "minute": 60, "hour": 3600}[unit]
        return [({"duration": spoken, "seconds": str(seconds)}, used + 1)]
    if name == "noise" and j < len(words) and len(words[j]) >= 6 and words[j].endswith("ing"):
        return [({}, 1)]  # "what was that banging": any sound a word ending in -ing names
    out = []
    for phrase, value in SLOTS[name].items():
        p = phrase.split()
        if len(p) <= len(words) - j and all(
            _close(a, b) for a, b in zip(p, words[j:], strict=False)
        ):
            out.append(({SLOT_FILLS.get(name, name): value} if value else {}, len(p)))
    return out


def _match(rule: tuple[str, ...], words: list[str]) -> tuple[dict[str, str], int] | None:
    """(slots, skips) of the best reading of all `words` by `rule`, or None."""
    best: tuple[dict[str, str], int] | None = None

    def go(i: int, j: int, slots: dict[str, str], skips: int) -> None:
        nonlocal best
        if best is not None and skips >= best[1]:
            return
        if i == len(rule):
            if j == len(words):  # no word past the template's end: "what was that movie"
                best = (slots, skips)
            return
        t = rule[i]
        if t.startswith("{") and "=" in t:
            k, v = t[1:-1].split("=")
            go(i + 1, j, {**slots, k: v}, skips)
            return
        if j < len(words):
            if t.startswith("{"):
                for values, used in _slot(t[1:-1], words, j):
                    go(i + 1, j + used, {**slots, **values}, skips)
            elif _close(t, words[j]):
                go(i + 1, j + 1, slots, skips)
            if skips < MAX_SKIPS and i > 0:  # an unknown word inside, never before the start
                go(i, j + 1, slots, skips + 1)

    go(0, 0, {}, 0)
    return best


# ---------------------------------------------------------------------- words
def _words(words: list[str]) -> list[list[str]]:
    """A reading's words -> its clauses (split at sentence ends), each as keys with the
    aliases applied."""
    clauses: list[list[str]] = [[]]
    for raw in words:
        for part in re.split(r"[-/]", raw):
            k = key(part)
            k = ALIASES.get(k, k)
            if k:
                clauses[-1].extend(k.split())
            m = re.match(r"(\d+)([a-z]+)$", k)  # "5minute" as Whisper may join it
            if m:
                clauses[-1][-1:] = [m.group(1), m.group(2)]
        if re.search(r"[.?!;]\s*$", raw):
            clauses.append([])
    return [c for c in clauses if c]


@lru_cache(maxsize=1)
def _fillers() -> list[list[str]]:
    return sorted((f.split() for f in FILLERS), key=len, reverse=True)


def _trim(words: list[str]) -> list[str]:
    """Fillers off both ends (a wake phrase, politeness), "please" and "just" anywhere; a
    clause opening "<word> you" is asked of someone ("could you", as Whisper may mishear its
    first word: "good you", "and you")."""
    w = [x for x in words if x not in ANYWHERE]
    changed = True
    while changed and w:
        changed = False
        if len(w) > 2 and w[1] in ("you", "u") and w[0] not in NARRATION:
            w, changed = w[2:], True
            continue
        for f in _fillers():
            if w[: len(f)] == f:
                w, changed = w[len(f) :], True
                break
            if len(w) > len(f) and w[-len(f) :] == f:
                w, changed = w[: -len(f)], True
                break
    return w


def parse_clause(words: list[str]) -> Intent | None:
    """One clause (keys) -> the request it makes, or None where it is not one."""
    w = _trim(words)
    if not w:
        return None
    w = [START_ALIASES.get(w[0], w[0]), *w[1:]]
    found: tuple[int, int, str, dict[str, str]] | None = None
    for name, rule in _compiled():
        told = NARRATION - HISTORY_OK if name == "history" else NARRATION
        if name != "history" and told & set(w):
            continue
        got = _match(rule, w)
        if got is not None:
            slots, skips = got
            score = (skips, -len(rule))
            if found is None or score < found[:2]:
                found = (*score, name, slots)
    if found is None:
        return None
    name, slots = found[2], found[3]
    if name == "history" and (NARRATION - HISTORY_OK) & set(w):
        return None
    return Intent(name, slots, " ".join(w), answer(name, slots))


def parse(words: list[str]) -> Intent | None:
    """A reading's words (as read, or as keys) -> the newest request in them, or None."""
    for clause in reversed(_words(words)):
        intent = parse_clause(clause)
        if intent is not None:
            return intent
    return None
