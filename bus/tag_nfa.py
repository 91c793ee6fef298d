"""A Thompson automaton for tag pattern trees: a match costs O(len(tag) x program), whatever the pattern (pure).

Why not `re`: Python's engine backtracks, and globs such as '**.**.**.x' or
'*a*a*a*b' make it try exponentially many splits of a tag (issue #13). Here
every instruction is visited at most once per tag position (a Pike VM keeping
a set of live instructions, the idea behind RE2), so the worst case is the
product of the tag's length and the program's, and the program is linear in
the pattern, which tag_glob.py bounds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .tag_glob import Alt, Lit, Node, Op

# The lazy DFA keeps at most this many moves, each of a live set this small:
# about a megabyte per pattern at worst; past it, moves are computed, not kept.
_MOVES_KEPT = 2048
_LIVE_KEPT = 64
# Opcodes. A program is a tuple of (opcode, a, b) triples.
_CHAR, _NOT_DOT, _NOT_NEWLINE, _SPLIT, _JUMP, _AT_START, _AT_PART_END, _MATCH = range(8)


@dataclass(frozen=True)
class TagNfa:
    """A compiled program; `matches` answers what `re.fullmatch` of the old glob regex answered."""

    program: tuple[tuple[int, object, object], ...]
    # (live set, character, next position is a part end) -> next live set, filled as tags come:
    # a lazy DFA, so a pattern such as '**.error' costs a dict lookup per character once warm.
    _moves: dict = field(default_factory=dict, compare=False, repr=False)

    def matches(self, tag: str) -> bool:
        program, end, moves = self.program, len(tag), self._moves
        live = moves.get((None, "", end == 0 or tag[0] == ".")) or self._move(None, "", 0, tag)
        for i, c in enumerate(tag):
            key = (live, c, i + 1 == end or tag[i + 1] == ".")
            live = moves.get(key) or self._move(live, c, i + 1, tag)
            if not live:
                return False
        return any(program[pc][0] == _MATCH for pc in live)

    def _move(self, live: tuple[int, ...] | None, c: str, i: int, tag: str) -> tuple[int, ...]:
        """The live set at position i after reading c from live (None: the start), kept if small."""
        end = len(tag)
        key = (live, c, i == end or tag[i] == ".")
        if live is None:
            advanced = [0]
        else:
            advanced = [pc + 1 for pc in live if _consumes(self.program[pc], c)]
        reached = tuple(sorted(_closure(self.program, advanced, tag, i, end)[0])) if advanced else ()
        if len(self._moves) < _MOVES_KEPT and len(reached) <= _LIVE_KEPT:
            self._moves[key] = reached
        return reached

    def run(self, tag: str) -> tuple[bool, int]:
        """Whether the tag matches, and the instructions visited: at most (len(tag) + 1) x len(program)."""
        program, end = self.program, len(tag)
        live, steps = _closure(program, [0], tag, 0, end)
        for i, c in enumerate(tag):
            advanced = [pc + 1 for pc in live if _consumes(program[pc], c)]
            if not advanced:
                return False, steps
            live, visited = _closure(program, advanced, tag, i + 1, end)
            steps += visited
        return any(program[pc][0] == _MATCH for pc in live), steps


def compile_nfa(options: list[tuple[Node, ...]]) -> TagNfa:
    """One program for several pattern trees: it matches when any of them matches the whole tag."""
    program: list[list] = []
    _emit((Alt(tuple(options)),), program)
    program.append([_MATCH, None, None])
    return TagNfa(tuple((op, a, b) for op, a, b in program))


def _consumes(instruction: tuple[int, object, object], c: str) -> bool:
    op = instruction[0]
    if op == _CHAR:
        return instruction[1] == c
    if op == _NOT_DOT:
        return c != "."
    # '.*' in the old regex did not cross a newline; tags never hold one, but keep it exact.
    return op == _NOT_NEWLINE and c != "\n"


def _closure(program, pcs: list[int], tag: str, i: int, end: int) -> tuple[list[int], int]:
    """The consuming (and matching) instructions reachable without reading a character at position i."""
    at_part_end = i == end or tag[i] == "."
    seen: set[int] = set()
    live: list[int] = []
    stack = list(pcs)
    while stack:
        pc = stack.pop()
        if pc in seen:
            continue
        seen.add(pc)
        op, a, b = program[pc]
        if op == _SPLIT:
            stack += (b, a)
        elif op == _JUMP:
            stack.append(a)
        elif op == _AT_START:
            if i == 0:
                stack.append(pc + 1)
        elif op == _AT_PART_END:
            if at_part_end:
                stack.append(pc + 1)
        else:
            # _MATCH stays live mid-tag (it reads nothing, so it dies at the next character): that keeps a
            # live set's moves independent of whether the next part end is a '.' or the end of the tag.
            live.append(pc)
    return live, len(seen)


def _emit(seq: tuple[Node, ...], program: list[list]) -> None:
    # Recursion only follows brace nesting, which tag_glob.py caps at MAX_BRACE_DEPTH.
    for node in seq:
        if isinstance(node, Lit):
            program.extend([_CHAR, c, None] for c in node.text)
        elif node is Op.STAR or node is Op.ANY:
            split = len(program)
            program.append([_SPLIT, split + 1, split + 3])
            program.append([_NOT_DOT if node is Op.STAR else _NOT_NEWLINE, None, None])
            program.append([_JUMP, split, None])
        elif node is Op.START:
            program.append([_AT_START, None, None])
        elif node is Op.PART_END:
            program.append([_AT_PART_END, None, None])
        else:
            _emit_alternatives(node, program)


def _emit_alternatives(node: Alt, program: list[list]) -> None:
    jumps = []
    for n, option in enumerate(node.options):
        last = n == len(node.options) - 1
        split = len(program)
        if not last:
            program.append([_SPLIT, split + 1, None])
        _emit(option, program)
        jumps.append(len(program))
        program.append([_JUMP, None, None])
        if not last:
            program[split][2] = len(program)
    for pc in jumps:
        program[pc][1] = len(program)
