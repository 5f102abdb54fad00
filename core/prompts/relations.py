"""How much scene structure a prompt describes: UniFL's semantic-based prompt filter score.

UniFL (Appendix B.2) parses each prompt with SceneGraphParser into entities (subjects and objects) with
their relationships (attributes and relations such as actions) and scores a prompt by "the maximum
number of relationships of any subject or object". Prompts with too little structure (junk, a single
tag, a bare noun) are filtered out before training, because they give the reward models little to judge
and invite reward hacking.

SceneGraphParser needs spaCy and a downloaded English model, which these machines cannot fetch, so this
module ships a small rule-based parser that produces the same graph format
(``{"entities": [{"head", "span", "modifiers": [{"dep": "amod", …}]}], "relations": [{"subject",
"object", "relation"}]}``) and scores both with one function, :func:`information_score`. When
``sng_parser`` *and* a spaCy English model are installed, :func:`scene_graph_parser` uses them instead.

What the built-in parser does, in order:

1. Clean the prompt the way prompt UIs write it: lowercase, drop ``<lora:…>`` tags and ``:1.2`` weights,
   ``long_hair`` → ``long hair``, ``award - winning`` → ``award-winning``.
2. Split at commas, semicolons, full stops, ``|`` and brackets. Tag-list prompts are mostly one phrase per
   segment; a segment that *starts* with a relation ("…, wearing a red dress", "…, in a forest") continues
   the scene and attaches to the prompt's subject (its first entity), the way a dependency parser attaches
   a participial or prepositional clause.
3. Tag each word from compact lexicons: determiners and numbers, prepositions (including multi-word ones
   such as "next to", "in front of", "to the left of"), auxiliaries, conjunctions, pronouns and other
   function words, and a list of common transitive action verbs. ``-ing`` and ``-ed`` words are resolved
   from their neighbours: "a *running* dog" (modifier), "a man *riding* a horse" (relation),
   "*covered* in snow" (relation: participle followed by a preposition), "*detailed* face" (modifier).
4. Chunk noun phrases: a determiner starts a phrase, content words accumulate, and any relation word,
   conjunction or function word ends it. The last word is the head noun; the words before it are
   modifiers, of which only adjective-like ones count as attributes (SceneGraphParser counts spaCy's
   ``amod`` only): a lexicon of colours, sizes, materials and common descriptive adjectives, plus suffixes
   (-ful, -ous, -ive, -ic, -al, -ish, -less, -able, -ible, -ed, participial -ing) with lists of nouns that
   share those endings (animal, crystal, music, table…). Other premodifiers ("oil painting", "greg
   rutkowski") are compounds and do not count. A phrase whose head is itself adjective-like ("highly
   detailed", "ultra realistic") names no entity.
5. A preposition joins the nearest entity before it with the entity right after it; a verb joins the
   subject of its clause (the last entity that is not itself an object: "a knight in shining armor
   *holding* a sword" → knight, not armor). As in SceneGraphParser, relations distribute over ``and``:
   "art by artgerm and greg rutkowski" gives two relations.

Limits, stated plainly: no part-of-speech model, so words outside the lexicons are guessed from their
endings; prepositional phrases attach to the nearest noun ("a man riding a horse on a beach" links horse
and beach, where a parser might link man and beach: the maximum is usually the same); predicate adjectives
("a cat is black") and adjectives split by commas ("a beautiful, elegant woman") are not attached; verbs
outside the list in -s form ("a cat *chases* a mouse" works, "a cat *knits* a scarf" does not) are read as
nouns; a continued clause attaches to the prompt's first entity even when a later one is meant. Credits
("by greg rutkowski", "trending on artstation") count as relations, as they would in SceneGraphParser:
the filter is meant to drop prompts with no structure at all, not to judge their content. The hand-labelled prompts in ``tests/test_prompt_selection.py`` pin the behaviour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

DETERMINERS = frozenset(
    "a an the this that these those his her its their my your our some any each every another no both either "
    "neither several many much few all one two three four five six seven eight nine ten eleven twelve twenty "
    "hundred thousand dozen".split()
)
INTENSIFIERS = frozenset(
    "very really extremely highly super ultra hyper incredibly insanely so too quite rather fairly slightly most "
    "more less almost nearly totally fully extra mega overly".split()
)
PREPOSITIONS = frozenset(
    "about above across after against along alongside amid amidst among amongst around at atop before behind below "
    "beneath beside besides between beyond by down during for from in inside into near of off on onto opposite out "
    "outside over past through throughout to toward towards under underneath upon via with within without like as "
    "vs versus".split()
)
# Longest first is enforced at match time; each becomes one relation token.
MULTIWORD_RELATIONS = tuple(
    tuple(phrase.split())
    for phrase in (
        "next to", "close to", "far from", "away from", "out of", "on top of", "in front of", "in back of",
        "in the middle of", "in the center of", "in the centre of", "at the top of", "at the bottom of",
        "on the edge of", "on the side of", "on the back of", "to the left of", "to the right of",
        "on the left of", "on the right of", "left of", "right of", "in the style of", "in between",
        "instead of", "full of",
    )
)
AUXILIARIES = frozenset("is are was were be been being am do does did can could will would should may might must".split())
CONJUNCTIONS = frozenset("and or & + nor".split())
FUNCTION_WORDS = frozenset(
    "i me you he him she it they them we us who whom whose which what where when why how there here not but if "
    "than then yet because while just only also even still etc ever never".split()
)
# Transitive actions common in prompts. Their -ing forms are verbs even before a bare noun ("wearing
# glasses"); their -s forms are verbs only between a noun and an object ("a cat chases a mouse").
VERB_ING_FORMS = frozenset(
    "wearing holding riding eating drinking carrying playing reading watching chasing hugging kissing fighting "
    "touching sitting standing leaning walking running climbing throwing catching pulling pushing kicking feeding "
    "driving wielding grabbing meeting attacking embracing cradling hunting guarding protecting licking biting "
    "having using seeing facing crossing surrounding".split()
)
VERB_S_FORMS = frozenset(
    "wears holds rides eats drinks carries plays reads watches chases hugs kisses fights touches sits stands leans "
    "walks runs climbs throws catches pulls pushes kicks feeds drives wields grabs meets attacks embraces cradles "
    "hunts guards protects licks bites has uses sees faces crosses surrounds".split()
)
# Never nouns, so verbs whenever a noun precedes them ("a cat has green eyes").
UNAMBIGUOUS_VERBS = frozenset("has have had wears holds carries wields embraces".split())
IRREGULAR_PARTICIPLES = frozenset("made built held worn drawn sewn woven born lit".split())
# -ing words (five letters or more) that are nouns, not participles.
ING_NOUNS = frozenset(
    "painting lighting building clothing ceiling thing things string spring swing evening morning wedding pudding "
    "sibling drawing rendering setting shading earring earrings stocking stockings awning offering being feeling "
    "duckling dumpling viking darling sterling ending opening clearing landing railing siding carving etching "
    "engraving sculpting sewing bedding icing filling frosting dressing seasoning stuffing topping housing "
    "lightning sling sting bling herring shilling beijing nothing something anything everything lodging outing "
    "serving".split()
)
ED_NOUNS = frozenset("seed steed speed breed greed creed tweed reed weed shed sled hundred".split())
ADJECTIVES = frozenset(
    # colours and tones
    "red orange yellow green blue purple violet pink brown black white gray grey silver gold golden beige cyan "
    "magenta teal turquoise crimson scarlet maroon navy indigo lavender ivory amber emerald azure pastel neon "
    "monochrome sepia blonde blond dark bright light pale vivid vibrant colorful colourful multicolored "
    # size, shape, age, position
    "big small large tiny huge giant massive little tall short long wide narrow thick thin round square flat deep "
    "shallow high low old young new ancient modern vintage retro futuristic medieval enormous gigantic "
    "miniature full empty open closed upper lower front back side "
    # quality and look
    "good best great bad fine sharp soft hard smooth rough clean dirty shiny glossy matte cute pretty beautiful "
    "ugly scary creepy spooky lonely calm happy sad angry evil cool warm hot cold wet dry fresh rusty dusty muddy "
    "furry fluffy hairy fuzzy silky sunny rainy cloudy foggy misty snowy stormy windy dreamy moody gloomy eerie "
    "lush intricate ornate delicate elaborate desolate ultimate elegant brilliant radiant "
    "iridescent translucent transparent luminous fluorescent magnificent opulent gorgeous stunning strong weak "
    "fat skinny slim muscular naked nude bald rich poor wild tame wise brave proud shy quiet loud fierce gentle "
    "sweet sour bitter salty spicy crispy juicy tasty hungry sleepy tired busy lazy crazy funny silly heavy "
    "holy lovely curly friendly deadly lively ghostly heavenly cuddly sparkly wrinkly elderly "
    "wooden woolen woollen silken earthen molten broken frozen hidden fallen forgotten rotten swollen sunken "
    "cinematic epic realistic dramatic detailed surreal abstract ethereal hyperrealistic photorealistic "
    "volumetric isometric symmetrical minimalist baroque gothic rustic cozy cosy tropical arctic alien "
    "mechanical robotic magical mystical mythical celestial cosmic floral organic geometric "
    "circular spherical rectangular triangular angular lunar solar polar stellar nuclear "
    "rocky grassy sandy icy leafy watery fiery shadowy smoky steamy bloody scaly slimy spiky shaggy messy "
    "fancy chubby hazy starry silvery grainy frosty thorny mossy blurry curvy wavy glassy milky gritty".split()
)
# Adjective-looking words that name things; not attributes as modifiers, fine as heads.
SUFFIX_NOUNS = frozenset(
    "animal crystal metal festival hospital cathedral mural portal canal signal pedestal petal sandal arsenal rival "
    "journal capital carnival ritual mammal medal pedal scandal total terminal criminal cannibal coral opal interval "
    "funeral material mineral cereal memorial admiral general corporal jackal spiral "
    "music magic mosaic picnic comic clinic relic tunic topic traffic logic republic critic mechanic panic fabric "
    "garlic attic lyric graphic "
    "olive detective motive archive drive locomotive relative executive objective perspective narrative "
    "table cable fable vegetable constable timetable turntable bible syllable stable".split()
)
# Adjective-like words that are usually nouns when they head a phrase ("soft light", "a giant").
HEAD_NOUNS = frozenset("light gold silver giant square front back side evil good bright".split())
ADJECTIVE_SUFFIXES = ("ful", "ous", "ive", "ic", "al", "ish", "less", "able", "ible", "ed")
_TAG = re.compile(r"<[^>]*>")
_WEIGHT = re.compile(r":\s*-?\d+(?:\.\d+)?")
_SPACED_HYPHEN = re.compile(r"(?<=\w)\s+-\s+(?=\w)")
_SEGMENT_SPLIT = re.compile(r"[,;|!?\n\r\t(){}\[\]\"“”«»]+|\.(?!\d)")
_TECHNICAL_TAG = re.compile(r"^\d+(?:k|mm|p|px|fps|d|x)$|^(?:hd|uhd|hdr|fhd|dof)$")
_WORD = re.compile(r"[a-z0-9]+(?:['’-][a-z0-9]+)*|&|\+")


def clean_prompt(prompt: str) -> list[str]:
    """Prompt → lower-case segments, with UI syntax (LoRA tags, attention weights, underscores) removed."""
    text = _TAG.sub(" ", prompt.lower())
    text = _WEIGHT.sub(" ", text).replace("_", " ")
    text = _SPACED_HYPHEN.sub("-", text)
    return [segment.strip() for segment in _SEGMENT_SPLIT.split(text) if segment.strip()]


def _words(segment: str) -> list[str]:
    words = []
    for word in _WORD.findall(segment):
        if word.endswith(("'s", "’s")):
            word = word[:-2]
        if (len(word) > 1 or word in ("a", "i", "&", "+")) and not _TECHNICAL_TAG.match(word):
            words.append(word)  # stray letters ("8 k", "3 d") and "8k", "35mm", "1080p" carry no scene
    return words


@lru_cache(maxsize=1 << 16)
def is_adjective(word: str) -> bool:
    """Adjective-like by lexicon or ending; nouns that share an ending are excluded."""
    if word in ADJECTIVES:
        return True
    if word in SUFFIX_NOUNS or word in ED_NOUNS or word.endswith(("fish", "bed")) or any(c.isdigit() for c in word):
        return False
    if "-" in word:  # "hyper-detailed", "award-winning", "photo-realistic": the last part decides
        return is_adjective(word.rsplit("-", 1)[1]) or _is_participle(word.rsplit("-", 1)[1])
    return len(word) >= 5 and word.endswith(ADJECTIVE_SUFFIXES)


def _is_participle(word: str) -> bool:
    return len(word) > 4 and word.endswith("ing") and word not in ING_NOUNS


# Token kinds.
DET, ADV, REL, AUX, CONJ, FUNC, WORD = "det", "adv", "rel", "aux", "conj", "func", "word"


@dataclass(frozen=True)
class _Token:
    text: str
    kind: str
    attribute: bool = False  # a modifier that counts (adjective or participle)


_MULTIWORD_BY_FIRST: dict[str, list[tuple[str, ...]]] = {}
for _phrase in sorted(MULTIWORD_RELATIONS, key=len, reverse=True):
    _MULTIWORD_BY_FIRST.setdefault(_phrase[0], []).append(_phrase)


def _match_multiword(words: list[str], i: int) -> int:
    """Length of the longest multi-word relation starting at ``words[i]`` (0 if none)."""
    for phrase in _MULTIWORD_BY_FIRST.get(words[i], ()):
        if tuple(words[i:i + len(phrase)]) == phrase:
            return len(phrase)
    return 0


@lru_cache(maxsize=1 << 16)
def _base_kind(word: str) -> str:
    if word in DETERMINERS or word.isdigit():
        return DET
    if word in PREPOSITIONS:
        return REL
    if word in AUXILIARIES:
        return AUX
    if word in CONJUNCTIONS:
        return CONJ
    if word in FUNCTION_WORDS:
        return FUNC
    if word in INTENSIFIERS:
        return ADV
    return WORD


def _tag(words: list[str]) -> list[_Token]:
    """Words → tokens; -ing/-ed/-ly/-s verb candidates are resolved from their neighbours, left to right."""
    raw: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
        span = _match_multiword(words, i)
        if span:
            raw.append((" ".join(words[i:i + span]), REL))
            i += span
        else:
            raw.append((words[i], _base_kind(words[i])))
            i += 1

    tokens: list[_Token] = []
    phrase_has_word = False  # content words since the last phrase boundary
    phrase_open = False  # a determiner or content word opened a noun phrase
    for j, (word, kind) in enumerate(raw):
        nxt_word, nxt_kind = raw[j + 1] if j + 1 < len(raw) else ("", "")
        if kind == WORD:
            kind, attribute = _resolve(word, nxt_word, nxt_kind, phrase_open, phrase_has_word)
        else:
            attribute = False
        tokens.append(_Token(word, kind, attribute))
        if kind == DET:
            phrase_open, phrase_has_word = True, False
        elif kind == WORD:
            phrase_open, phrase_has_word = True, True
        elif kind != ADV:
            phrase_open = phrase_has_word = False
    return tokens


def _resolve(word: str, nxt_word: str, nxt_kind: str, phrase_open: bool, phrase_has_word: bool) -> tuple[str, bool]:
    """Decide whether a content-looking word is a relation (verb), an intensifier or a noun-phrase word."""
    object_follows = nxt_kind in (DET, REL)
    nxt_is_word = nxt_kind == WORD
    if _is_participle(word):
        if phrase_open and not phrase_has_word:  # "a running dog"
            return WORD, True
        if object_follows:  # "a man riding a horse", "trending on artstation"
            return REL, False
        if nxt_is_word:  # "a girl wearing glasses" vs "a beautiful sleeping cat"
            return (REL, False) if word in VERB_ING_FORMS else (WORD, True)
        return (REL, False) if phrase_has_word else (WORD, False)  # "a dog running": intransitive, no object
    if phrase_has_word and (word in UNAMBIGUOUS_VERBS or word in VERB_S_FORMS and (object_follows or nxt_kind == ADV)):
        return REL, False  # "a cat has green eyes", "a cat chases a mouse", "a cat sits on a mat"
    after_determiner = phrase_open and not phrase_has_word  # "a set of", "the bed of"
    if (word.endswith("ed") and len(word) >= 5 and word not in ED_NOUNS or word in IRREGULAR_PARTICIPLES) and nxt_kind == REL and not after_determiner:
        return REL, False  # "covered in snow", "made of glass", "surrounded by trees"
    if word.endswith("ly") and len(word) > 4 and nxt_is_word and (is_adjective(nxt_word) or _is_participle(nxt_word)) and word not in ADJECTIVES:
        return ADV, False  # "intricately detailed", "beautifully glowing"
    return WORD, is_adjective(word)


@dataclass
class _Phrase:
    words: list[_Token]
    has_det: bool


@dataclass
class _Entity:
    head: str
    span: str
    attributes: list[str] = field(default_factory=list)


@dataclass
class _Relation:
    text: str
    verb: bool  # "riding", "covered in": attaches to the clause's subject; "on", "next to": to the nearest noun


def _phrases(tokens: Sequence[_Token]) -> list:
    """Tokens → a sequence of _Phrase, _Relation, "conj" and "break" items."""
    items: list = []
    phrase: _Phrase | None = None

    def close():
        nonlocal phrase
        if phrase is not None and phrase.words:
            items.append(phrase)
        phrase = None

    for token in tokens:
        if token.kind == DET:
            close()
            phrase = _Phrase([], has_det=True)
        elif token.kind == WORD:
            if phrase is None:
                phrase = _Phrase([], has_det=False)
            phrase.words.append(token)
        elif token.kind == ADV:
            continue
        elif token.kind == REL:
            close()
            if items and isinstance(items[-1], _Relation):
                items[-1].text += " " + token.text
            else:
                items.append(_Relation(token.text, verb=token.text not in PREPOSITIONS and " " not in token.text))
        elif token.kind == AUX:
            close()
        elif token.kind == CONJ:
            close()
            items.append("conj")
        else:
            close()
            items.append("break")
    close()
    return items


def _names_no_entity(phrase: _Phrase, before_conj: bool) -> bool:
    """"highly detailed", "ultra realistic": an adjective phrase (but "a giant", "soft light" are nouns)."""
    head = phrase.words[-1].text
    return is_adjective(head) and head not in HEAD_NOUNS and (not phrase.has_det or before_conj)


@dataclass
class _SceneState:
    entities: list[_Entity] = field(default_factory=list)
    relations: list[tuple[int, int, str]] = field(default_factory=list)
    main: int | None = None  # the prompt's subject: clauses that continue the scene attach to it


def _entity_groups(items: list, state: _SceneState) -> list:
    """Phrases → entity ids, grouped by "and" ([cat, dog]); relations and breaks pass through.

    An adjective-only phrase before "and" lends its adjectives to the next phrase ("red and white car").
    """
    groups: list = []
    carried: list[str] = []
    linked = False  # the previous item was "conj" right after an entity group
    for k, item in enumerate(items):
        if not isinstance(item, _Phrase):
            linked = item == "conj" and bool(groups) and isinstance(groups[-1], list)
            if item != "conj":
                carried = []
                groups.append(item)
            continue
        before_conj = k + 1 < len(items) and items[k + 1] == "conj"
        if _names_no_entity(item, before_conj):
            carried = carried + [t.text for t in item.words if t.attribute] if before_conj else []
            linked = False
            continue
        attributes = (carried if not item.has_det else []) + [t.text for t in item.words[:-1] if t.attribute]
        carried = []
        state.entities.append(_Entity(item.words[-1].text, " ".join(t.text for t in item.words), attributes))
        if linked:
            groups[-1].append(len(state.entities) - 1)
        else:
            groups.append([len(state.entities) - 1])
        linked = False
    return groups


def _parse_segment(tokens: Sequence[_Token], state: _SceneState) -> None:
    groups = _entity_groups(_phrases(tokens), state)
    continues_scene = bool(groups) and isinstance(groups[0], _Relation) and state.main is not None
    nearest = clause_subject = [state.main] if continues_scene else None
    first_group: list[int] | None = None
    after_relation = False
    for k, item in enumerate(groups):
        if isinstance(item, list):
            first_group = first_group or item
            nearest = item
            if not after_relation:
                clause_subject = item
            after_relation = False
        elif isinstance(item, _Relation):
            subject = clause_subject if item.verb and clause_subject else nearest
            objects = groups[k + 1] if k + 1 < len(groups) and isinstance(groups[k + 1], list) else None
            if subject and objects:
                state.relations.extend((s, o, item.text) for s in subject for o in objects)
            after_relation = True
        else:
            after_relation = False
    if state.main is None and not continues_scene and first_group is not None:
        state.main = first_group[0]


@lru_cache(maxsize=1 << 16)
def _segment_tokens(segment: str) -> tuple[_Token, ...]:
    """Tagging needs only the segment itself, and scraped prompts repeat segments ("highly detailed") a lot."""
    return tuple(_tag(_words(segment)))


@lru_cache(maxsize=1 << 16)
def _parse_cached(prompt: str) -> tuple[tuple[_Entity, ...], tuple[tuple[int, int, str], ...]]:
    state = _SceneState()
    for segment in clean_prompt(prompt):
        _parse_segment(_segment_tokens(segment), state)
    return tuple(state.entities), tuple(state.relations)


def parse_scene_graph(prompt: str) -> dict:
    """The built-in parser's scene graph, in SceneGraphParser's format (attributes as ``amod`` modifiers)."""
    entities, relations = _parse_cached(prompt)
    return {
        "entities": [
            {"head": e.head, "lemma_head": e.head, "span": e.span,
             "modifiers": [{"dep": "amod", "span": a, "lemma_span": a} for a in e.attributes]}
            for e in entities
        ],
        "relations": [{"subject": s, "object": o, "relation": r} for s, o, r in relations],
    }


def information_score(graph: dict) -> int:
    """The maximum number of relationships (attributes + relations) attached to any one entity.

    Works on graphs from the built-in parser and from SceneGraphParser, whose modifiers also include
    determiners and numbers: only ``amod`` modifiers are attributes.
    """
    counts = [sum(1 for m in e.get("modifiers", ()) if m.get("dep") == "amod") for e in graph["entities"]]
    for relation in graph["relations"]:
        for end in (relation["subject"], relation["object"]):
            if end is not None and 0 <= end < len(counts):
                counts[end] += 1
    return max(counts, default=0)


def relation_score(prompt: str) -> int:
    """Information score of one prompt with the built-in parser."""
    return information_score(parse_scene_graph(prompt))


def scene_graph_parser():
    """A scorer backed by SceneGraphParser (``pip install SceneGraphParser spacy`` plus an English model).

    Returns ``prompt -> score``. Raises ImportError naming what is missing, so callers can fall back to
    :func:`relation_score`.
    """
    try:
        import sng_parser
    except ImportError as err:
        raise ImportError("SceneGraphParser is not installed: pip install SceneGraphParser spacy, then install a spaCy English model (en_core_web_sm); or use the built-in parser") from err
    parser = sng_parser.Parser("spacy", model="en_core_web_sm")

    def score(prompt: str) -> int:
        return information_score(parser.parse(prompt))

    return score
