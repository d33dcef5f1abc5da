"""The motion query's answer as a grammar over tokens: phrases of the checkpoint's vocabulary joined
by " and ", at most one per axis, or "stop" alone.

Two uses when decoding a motion (`vla.rth.query.greedy_decode`):
- the answer can only be a motion the action query knows the words of (no stray text);
- tokens the grammar forces ("▁arm" after "▁move", "ri", "pper" after "▁close ▁g") are appended
  without asking the model, and after a finished phrase " and" is fed speculatively, so one forward
  pass decides both "end here?" and the next phrase's first word. A 7B decode step is bound by
  kernel launches, so a pass that feeds five tokens costs about what a pass that feeds one does:
  "move arm forward and close gripper" + EOS is 9 tokens but 4 passes.
Greedy decoding under the grammar picks the same tokens as free greedy decoding whenever free
decoding's answer is in the grammar.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from vla.rth.motions import JOINER, STOP


@dataclasses.dataclass(frozen=True)
class MotionGrammar:
    """Token ids of every phrase, of the joiner, and EOS; one phrase per axis in a motion."""

    phrases: tuple[tuple[int, ...], ...]
    joiner: tuple[int, ...]
    eos: int
    stop: int | None  # index of the "stop" phrase: only ever the whole answer
    max_tokens: int  # no joiner once an answer has this many tokens (the free decode's cap)
    axes: tuple[int, ...] = ()  # per phrase, its axis (phrases of one axis exclude each other); () = its own

    @classmethod
    def from_vocabulary(cls, vocabulary: Sequence[str], encode: Callable[[str], list[int]], eos: int,
                        max_tokens: int, words: Sequence[tuple[str, str]] = ()) -> "MotionGrammar | None":
        """The grammar of `vocabulary`'s phrases; None where joining phrase tokens would not give the
        tokens a motion was trained on (a tokenizer that merges across words), so free decoding is safe.

        `encode(text)` gives a text's tokens without BOS/EOS, as the motion query was trained.
        `words`: (negative, positive) phrase pairs, one per axis; a motion names each axis at most once,
        as the labeller writes them (a phrase in no pair is an axis of its own)."""
        motions = sorted({m.strip().lower() for m in vocabulary if m.strip()})
        texts = sorted({p for m in motions for p in m.split(JOINER)})
        if not texts:
            return None
        ids = {p: tuple(encode(p)) for p in texts}
        joiner = tuple(encode(JOINER.strip()))
        if not joiner or any(not v for v in ids.values()) or len(set(ids.values())) != len(ids):
            return None
        for m in motions:
            parts = [ids[p] for p in m.split(JOINER)]
            joined = [t for i, part in enumerate(parts) for t in ((*joiner, *part) if i else part)]
            if joined != list(encode(m)):
                return None
        phrases = tuple(ids[p] for p in texts)
        axis_of = {p: a for a, pair in enumerate(words) for p in pair}
        axes = tuple(axis_of.get(p, len(words) + i) for i, p in enumerate(texts))
        return cls(phrases, joiner, eos, texts.index(STOP) if STOP in texts else None, max_tokens, axes)


class MotionCursor:
    """One row's way through the grammar: which tokens may come next, and which are forced."""

    def __init__(self, grammar: MotionGrammar) -> None:
        self.g = grammar
        self.tokens: list[int] = []  # the answer so far (ends with EOS once done)
        self.done = False
        self._prefix: tuple[int, ...] = ()  # tokens of the phrase being written
        self._used: frozenset[int] = frozenset()  # axes of the phrases already finished in this answer

    def _axis(self, i: int) -> int:
        return self.g.axes[i] if self.g.axes else i

    def _candidates(self) -> list[int]:
        n = len(self._prefix)
        return [i for i, p in enumerate(self.g.phrases) if self._axis(i) not in self._used and p[:n] == self._prefix
                and (i != self.g.stop or not self._used)]

    def _finished_phrase(self) -> int | None:
        return next((i for i in self._candidates() if self.g.phrases[i] == self._prefix), None)

    def _may_join(self, finished: int) -> bool:
        if finished == self.g.stop or len(self.tokens) >= self.g.max_tokens:
            return False
        used = self._used | {self._axis(finished)}
        return any(self._axis(i) not in used and i != self.g.stop for i in range(len(self.g.phrases)))

    def allowed(self) -> list[int]:
        """The tokens that may come next (empty once done)."""
        if self.done:
            return []
        out = sorted(self._children())
        finished = self._finished_phrase()
        if finished is not None:
            out.append(self.g.eos)
            if self._may_join(finished):
                out.append(self.g.joiner[0])
        return out

    def take(self, token: int) -> list[int]:
        """Append `token` (one of `allowed()`) and every token the grammar then forces; returns them all."""
        if token not in self.allowed():
            raise ValueError(f"token {token} is not allowed here; allowed: {self.allowed()}")
        start = len(self.tokens)
        while True:
            finished = self._finished_phrase()
            joins = finished is not None and token == self.g.joiner[0] and token not in self._children()
            if token == self.g.eos:
                self.tokens.append(token)
                self.done = True
                break
            if joins:
                self.tokens.extend(self.g.joiner)
                self._used, self._prefix = self._used | {self._axis(finished)}, ()
            else:
                self.tokens.append(token)
                self._prefix = (*self._prefix, token)
            nxt = self.allowed()
            if len(nxt) != 1:
                break
            token = nxt[0]
        return self.tokens[start:]

    def _children(self) -> set[int]:
        n = len(self._prefix)
        return {self.g.phrases[i][n] for i in self._candidates() if len(self.g.phrases[i]) > n}

    def speculation(self) -> tuple[int, ...]:
        """The joiner's tokens when the only choice left is "end here" or " and" (fed ahead, so the
        next pass also answers the next phrase's first word); else ()."""
        return self.g.joiner if self.allowed() == [self.g.eos, self.g.joiner[0]] else ()
