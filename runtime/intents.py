"""Spoken requests to the device, parsed from the words a window reading heard: a small slot
grammar of the four assist intents (the templates in GRAMMAR, the answers in ANSWERS)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache, lru_cache

from soundflow.runtime.agreement import key
from soundflow.runtime.soundalike import alike, onset_alike

# The grammar, as data. A template is words, `(a|b)` alternatives, `[a b]` optional parts and
# `{slot}` slots (their words in SLOTS; `{level}` a number, `{duration}` a number and a unit),
# `<macro>`s (MACROS); `{name=value}` sets a slot without reading a word. A clause is answered where one template
# reads all of it, after fillers and a wake phrase are taken off its ends, with at most
# MAX_SKIPS words the template does not know (a misreading, an aside) and at most one span
# read by sound (runtime/soundalike.py: "whole way" for "hallway"; ANCHORS says when).
MACROS = {
    "<bit>": "[(a|the) (bit|little|little bit)]",
    "<where>": "[in the {room}|{where}]",
    "<away>": "[while i was (out|away|gone|asleep)]",
}
GRAMMAR: dict[str, list[str]] = {
    "lights": [
        "(turn|switch|flip|put|shut) {state} [all] [the|my] [{room}] lights <where>",
        "(turn|switch|flip|put|shut) [all] [the|my] [{room}] lights [back] {state} <where>",
        "(turn|switch) [the] lights {state} in the {room}",
        "lights out {state=off} [in the {room}]",
        "make [all] [the] [{room}] lights (dimmer|darker) {state=dim} <where> <bit>",
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
        "(time|count down|remind me in|wake me [up] in|let me know in) {action=set} {duration}",
        "(set|start) {action=set} [a|the] countdown (for|of) {duration}",
        "(set|start) {action=set} [a|an] alarm (for|in) {duration}",
        "(give me|put|set) {action=set} {duration} on the (timer|clock)",
        "(cancel|stop|clear|delete|end|turn off|switch off|kill|forget [about]|never mind) "
        "{action=cancel} [the|my|that] (timer|countdown)",
        "(turn|switch) [the|my|that] timer off {action=cancel}",
        "timer (off|cancel|stop) {action=cancel}",
    ],
    "volume": [
        "(turn|crank|bring|put|pump|bump|take) [the] {thing} {way} <bit>",
        "(turn|crank|bring|put|pump|bump|take) {way} the {thing} <bit>",
        "(it's|that's) [a bit|way|much] too (loud|noisy) {way=down}",
        "(it's|that's) [a bit|way|much] too (quiet|soft) {way=up}",
        "i can't hear (it|the {thing}|anything) {way=up}",
        "[the] {thing} {way} <bit>",
        "[make it|make the {thing}] <bit> {louder} <bit>",
        "(raise|increase|boost) {way=up} the {thing} <bit>",
        "(lower|decrease|reduce) {way=down} the {thing} <bit>",
        "(mute|silence) {way=mute} [the] [{thing}]",
        "unmute {way=unmute} [the] [{thing}]",
        "(set|put|turn|change) {way=level} [the] {thing} (to|at) {level}",
        "[the] {thing} [to|at] {way=level} {level}",
    ],
    "history": [
        "(what was|what's|what s|what is) {about=sound} that [{noise}] [just now|outside|there]",
        "(what was|what's|what s|what is) {about=sound} the {noise} [just now|outside|there]",
        "what made that {about=sound} [{noise}]",
        "did you hear (that|something) {about=sound} [{noise}]",
        "what did i miss {about=alert} <away>",
        "what was that i just heard {about=sound}",
        "what did i just hear {about=sound}",
        "did i miss anything {about=alert} [important] <away>",
        "[did] (anything|something) happen {about=alert} [just now|<away>]",
        "(anything|something) happened {about=alert} [just now|<away>]",
        "(what's|what is) going on {about=alert} [out there|outside]",
        "was that [the|a] {noise} {about=sound}",
        "did [the|a] {noise} (ring|go off|beep) {about=sound} [just now|<away>]",
        "did (someone|somebody|anyone) (knock|ring) {about=sound} [just now|<away>]",
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
    "where": {
        w: "" for w in ("in here", "here", "everywhere", "in the house", "upstairs", "downstairs")
    },
    "thing": {w: "" for w in "volume sound music tv radio it that this speaker audio".split()},
    "way": {"up": "up", "down": "down", "higher": "up", "lower": "down"},
    "louder": {"louder": "up", "quieter": "down", "softer": "down", "more quiet": "down"},
    "noise": {
        w: ""
        for w in "noise|sound|bang|beep|beeping|crash|thud|knock|knocking|ringing|buzzing|"
        "alarm|noise there|doorbell|door|phone|dog|baby|kettle|siren|smoke alarm".split("|")
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
    "all right", "quickly", "real quick", "oh", "would you mind", "do you mind", "mind",
    "if you don't mind", "if you dont mind", "if you could", "can i have", "could i have",
    "can we have", "could we have", "can i get", "could i get",
)  # fmt: skip
ANYWHERE = ("please", "just", "kindly")
# A clause with one of these words is about something else (the past, someone, a negation):
# it is told, not asked for, and stays quiet. History's own questions are read first.
NARRATION = frozenset(
    "yesterday ago last was were had has have did didn't doesn't don't dont never not always "
    "usually when because while after before said says told asked forgot wanted tried "
    "are is isn't aren't am "
    "turned switched started dimmed cancelled canceled muted he she they we i his her their "
    "sister brother mom dad who if should would".split()
)
HISTORY_OK = frozenset("was did i he she they while is".split())  # its questions use them
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
# read where a number must be (before a unit, or ending a volume level)
HOMOPHONES = {"for": 4, "fore": 4, "to": 2, "too": 2, "ate": 8, "won": 1, "tree": 3, "free": 3}
# ... and where "for" or "to" is read as a number before the real one: "timer four forty
# minutes" (4 and 40 make no number: the first is the preposition)
PREPOSITIONS = frozenset({"for", "four", "fore", "to", "two", "too"})
# A unit as misread after a number ("one other", "for another": "an hour")
UNIT_ALIKES = {"other": "hour", "our": "hour", "ours": "hour"}
# Slots whose words may be read by sound (runtime/soundalike.py): "whole way" for "hallway"
SOUND_SLOTS = frozenset({"room", "thing", "noise", "louder"})
# A request read with a sound-alike must still name its intent in a word read as spelled
# (a sound-alike alone is too weak to act on: "later" sounds like "louder")
ANCHORS: dict[str, frozenset[str]] = {
    "lights": frozenset({"lights"}),
    "timer": frozenset({"timer", "countdown"}),
    "volume": frozenset(
        "volume sound music tv radio speaker audio louder quieter softer mute unmute".split()
    ),
    "history": frozenset(
        "noise sound bang beep beeping crash alarm happen happened miss say hear heard".split()
    ),
}
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
    if a == b or (a == "the" and b == "a"):  # "switch a living room lights off"
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
    after = words[j + 1] if j + 1 < len(words) else ""
    if w in HOMOPHONES and (not after or after in SLOTS["unit"] or after in UNIT_ALIKES):
        return HOMOPHONES[w], 1  # "volume to for": a number where one must be
    if w in NUMBERS:
        n = NUMBERS[w]
        if 20 <= n < 100 and j + 1 < len(words) and 0 < NUMBERS.get(words[j + 1], 0) < 10:
            return n + NUMBERS[words[j + 1]], 2
        return n, 1
    return None


def _duration(words: list[str], j: int) -> list[tuple[dict[str, str], int, int]]:
    """A number and its unit at words[j:] ("another" read for "an hour"; "for" read as
    "four" before the number); (values, words read, 0)."""
    w = words[j:]
    if w[:1] == ["another"]:  # "an other": the split read as one word
        w, extra = ["an", "other", *w[1:]], -1
    elif w[:2] == ["half", "another"]:
        w, extra = ["half", "an", "other", *w[2:]], -1
    else:
        extra = 0
    if w[:3] in (["half", "an", "hour"], ["half", "an", "other"]):
        return [({"duration": "thirty minutes", "seconds": "1800"}, 3 + extra, 0)]
    for start in (0, 1):
        if start and (not w or w[0] not in PREPOSITIONS):
            break
        got = _number(w, start)
        if got is None:
            continue
        n, used = got
        after = w[start + used] if start + used < len(w) else ""
        unit = SLOTS["unit"].get(after) or UNIT_ALIKES.get(after)
        if unit is None or n < 1:
            continue
        spoken = f"{number_words(n)} {unit}{'' if n == 1 else 's'}"
        seconds = n * {"second": 1, "minute": 60, "hour": 3600}[unit]
        return [({"duration": spoken, "seconds": str(seconds)}, start + used + 1 + extra, 0)]
    return []


def _slot(name: str, words: list[str], j: int) -> list[tuple[dict[str, str], int, int]]:
    """The ways slot `name` may read words[j:]: (values, words read, of them read by
    sound: a SOUND_SLOTS word sounding like one of its words, runtime/soundalike.py)."""
    if name == "n" or name == "level":
        got = _number(words, j)
        if got is None or (name == "level" and words[j] in ("a", "an")):
            return []
        return [({name: number_words(got[0])}, got[1], 0)]
    if name == "duration":
        return _duration(words, j)
    if name == "noise" and j < len(words) and len(words[j]) >= 6 and words[j].endswith("ing"):
        return [({}, 1, 0)]  # "what was that banging": any sound a word ending in -ing names
    return _phrases(name, tuple(words[j : j + 2]))


@lru_cache(maxsize=8192)
def _phrases(name: str, said: tuple[str, ...]) -> list[tuple[dict[str, str], int, int]]:
    """Slot `name`'s readings of the (up to) two words `said` (phrases are one or two)."""
    out = []
    for phrase, value in SLOTS[name].items():
        p = phrase.split()
        values = {SLOT_FILLS.get(name, name): value} if value else {}
        if len(p) <= len(said) and all(_close(a, b) for a, b in zip(p, said, strict=False)):
            out.append((values, len(p), 0))
        elif name in SOUND_SLOTS:
            out += [
                (values, n, n) for n in (1, 2) if n <= len(said) and alike(list(said[:n]), phrase)
            ]
    return out


@dataclass(frozen=True)
class _Reading:
    """How a rule read a clause: its slots, the words it skipped, and the words it read by
    sound (their positions: narration there is a misreading, not narration)."""

    slots: dict[str, str]
    skips: int
    by_sound: frozenset[int]
    onset: bool = False  # the first word read by `onset_alike`

    @property
    def cost(self) -> int:
        return self.skips + (1 if self.by_sound else 0)


@cache
def _literals(rule: tuple[str, ...], i: int) -> list[tuple[str, int, dict[str, str]]]:
    """The template's words from i on, one or two, up to a slot: (the words, where the
    rule goes on, the slots set on the way: `{about=sound}`)."""
    out, said, sets = [], [], {}
    while i < len(rule) and len(said) < 2:
        t = rule[i]
        if t.startswith("{") and "=" in t:
            k, v = t[1:-1].split("=")
            sets = {**sets, k: v}
        elif t.startswith("{"):
            break
        else:
            said.append(t)
            out.append((" ".join(said), i + 1, sets))
        i += 1
    return out


def _match(rule: tuple[str, ...], words: list[str]) -> _Reading | None:
    """The best (fewest skips and sound-alikes) reading of all `words` by `rule`, or None.
    At most MAX_SKIPS words the rule does not know and one sound-alike span (one or two
    read words sounding like one or two of the rule's)."""
    best: _Reading | None = None

    def go(i: int, j: int, slots: dict, skips: int, sound: frozenset[int], onset: bool) -> None:
        nonlocal best
        cost = skips + (1 if sound else 0)
        if best is not None and cost >= best.cost:
            return
        if i == len(rule):
            if j == len(words):  # no word past the template's end: "what was that movie"
                best = _Reading(slots, skips, sound, onset)
            return
        t = rule[i]
        if t.startswith("{") and "=" in t:
            k, v = t[1:-1].split("=")
            go(i + 1, j, {**slots, k: v}, skips, sound, onset)
            return
        if j < len(words):
            if t.startswith("{"):
                for values, used, heard in _slot(t[1:-1], words, j):
                    if heard and sound:
                        continue
                    span = frozenset(range(j, j + heard)) if heard else sound
                    go(i + 1, j + used, {**slots, **values}, skips, span, onset)
            elif _close(t, words[j]):
                go(i + 1, j + 1, slots, skips, sound, onset)
            if not t.startswith("{") and not sound:
                # "what said" for "what's that", "whole way" for "hallway", "time or" for
                # "timer"; a first word but for its first sound ("him the lights")
                for phrase, after, sets in _literals(rule, i):
                    for nw in (1, 2):
                        said = words[j : j + nw]
                        if j + nw > len(words):
                            continue
                        span = frozenset(range(j, j + nw))
                        if alike(said, phrase):
                            go(after, j + nw, {**slots, **sets}, skips, span, False)
                        elif i == j == 0 and " " not in phrase and not _known(said):
                            if onset_alike(said, phrase):
                                go(after, j + nw, {**slots, **sets}, skips, span, True)
            if skips < MAX_SKIPS and i > 0:  # an unknown word inside, never before the start
                go(i, j + 1, slots, skips + 1, sound, onset)

    go(0, 0, {}, 0, frozenset(), False)
    return best


@lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str]:
    """Every word the grammar knows: its templates', its slots' and its fillers'."""
    words = {t for _, rule in _compiled() for t in rule if not t.startswith("{")}
    words |= {w for slot in SLOTS.values() for phrase in slot for w in phrase.split()}
    return frozenset(words | {w for f in FILLERS for w in f.split()} | set(NARRATION))


def _known(said: list[str]) -> bool:
    """Whether `said` is one word the grammar knows: read as itself, not by sound."""
    return len(said) == 1 and said[0] in _vocabulary()


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
        if len(w) > 2 and w[-1] == "you" and w[-2] not in NARRATION:  # "..., with you"
            w, changed = w[:-2], True
            continue
        for f in _fillers():
            if w[: len(f)] == f:
                w, changed = w[len(f) :], True
                break
            if len(w) > len(f) and w[-len(f) :] == f:
                w, changed = w[: -len(f)], True
                break
    return w


@lru_cache(maxsize=1)
def _verbs() -> frozenset[str]:
    """The words requests open with ("turn", "cancel", "mute")."""
    return frozenset(rule[0] for _, rule in _compiled() if not rule[0].startswith("{"))


def _imperative(word: str, endings: tuple[str, ...]) -> str:
    """`word` as the request's verb where it is one of the grammar's verbs with one of
    `endings` ("cancelled" -> "cancel", "turning" -> "turn"), else `word`."""
    verbs = _verbs()
    for end in endings:
        if word.endswith(end) and word not in verbs:
            stem = word[: -len(end)]
            for cut in (stem, stem[:-1], stem + "e"):  # "dimmed", "muting"
                if cut in verbs:
                    return cut
    return word


def _told(name: str, rule: tuple[str, ...], w: list[str], reading: _Reading) -> bool:
    """Whether the clause is narration ("he turned the volume down", NARRATION), leaving out
    the words read by sound (a misreading: "what said" for "what's that") and the rule's own
    words ("never mind the timer")."""
    told = (NARRATION - HISTORY_OK if name == "history" else NARRATION) - set(rule)
    misread = () if reading.onset else reading.by_sound  # an onset-alike is too weak
    return any(x in told for k, x in enumerate(w) if k not in misread)


def _anchored(name: str, w: list[str], reading: _Reading) -> bool:
    """A reading with a sound-alike names its intent in a word read as spelled (ANCHORS), or
    a duration for a timer, an -ing sound for history."""
    if not reading.by_sound:
        return True
    spelled = [x for k, x in enumerate(w) if k not in reading.by_sound]
    if name == "timer" and "duration" in reading.slots:
        return True
    if name == "history" and any(len(x) >= 6 and x.endswith("ing") for x in spelled):
        return True
    return any(x in ANCHORS[name] for x in spelled)


def _opens(phrases: tuple[str, ...], w: list[str]) -> bool:
    """Whether a rule whose first words are `phrases` ("what's", "what's that") may read a
    clause opening with w: as `_match` would, by spelling, sound or onset."""
    if _close(phrases[0], w[0]):
        return True
    spans = [w[:n] for n in (1, 2) if n <= len(w)]
    if any(alike(said, p) for said in spans for p in phrases):
        return True
    return any(onset_alike(said, phrases[0]) for said in spans if not _known(said))


def parse_clause(words: list[str]) -> Intent | None:
    """One clause (keys) -> the request it makes, or None where it is not one."""
    w = _trim(words)
    if not w:
        return None
    # a request's verb as misread at its start ("cancelled a timer": "cancel the timer"), or
    # asked politely ("would you mind turning off the lights")
    mind = "mind" in words[: len(words) - len(w)]
    first = START_ALIASES.get(w[0], w[0])
    first = _imperative(first, ("ing",) if mind else ("ed", "d"))
    w = [first, *w[1:]]
    found: tuple[int, int, str, _Reading] | None = None
    opens: dict[tuple[str, ...], bool] = {}  # whether a rule's first words may read w's
    for name, rule in _compiled():
        if not rule[0].startswith("{"):
            lits = tuple(phrase for phrase, _, _ in _literals(rule, 0))
            if lits not in opens:
                opens[lits] = _opens(lits, w)
            if not opens[lits]:
                continue
        got = _match(rule, w)
        if got is None or (got.onset and got.skips) or _told(name, rule, w, got):
            continue
        if not _anchored(name, w, got):
            continue
        score = (got.cost, -len(rule))
        if found is None or score < found[:2]:
            found = (*score, name, got)
    if found is None:
        return None
    name, slots = found[2], found[3].slots
    return Intent(name, slots, " ".join(w), answer(name, slots))


def parse(words: list[str]) -> Intent | None:
    """A reading's words (as read, or as keys) -> the newest request in them, or None."""
    for clause in reversed(_words(words)):
        intent = parse_clause(clause)
        if intent is not None:
            return intent
    return None
