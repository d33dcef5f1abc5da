"""RT-H's two queries on one OpenVLA model: task -> motion (text), then task + motion -> action tokens.

Prompts (exact):
  motion query  `In: What motion should the robot do to {task}?\\nOut:` + motion text + EOS
  action query  `In: What action should the robot take to {task} with motion {motion}?\\nOut:` + "▁" + 7 action tokens + EOS
A checkpoint is RT-H when its config.json carries an `rth` table (`RTHInfo`); it round-trips through
`save_pretrained` / `from_pretrained` as one of the config's kept extra keys.

Look-ahead mode (RT-H's latency trick): at step t one batch holds the action query for t, using the
motion predicted at t-1, and the motion query whose answer is used at t+1; both rows share the image.
"""
from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import transformers

from vla.errors import InstructionError
from vla.model.llm import CACHE_ARG
from vla.model.openvla import RTH_CONFIG_KEY
from vla.model.multi_image import stack_role_images
from vla.model.normalization import select_stats, unnormalize_actions
from vla.model.processor import IGNORE_INDEX
from vla.model.vib import add_kl_term
from vla.rth.errors import MotionQueryError
from vla.rth.grammar import MotionCursor, MotionGrammar
from vla.rth.motions import STOP, check_motion, word_table

logger = logging.getLogger(__name__)

MOTION_PROMPT = "In: What motion should the robot do to {task}?\nOut:"
ACTION_PROMPT = "In: What action should the robot take to {task} with motion {motion}?\nOut:"
MAX_MOTION_TOKENS = 24  # longest motion answer decoded; longer answers are cut and logged
CONFIG_KEY = RTH_CONFIG_KEY  # the config.json table that marks an RT-H checkpoint


@dataclasses.dataclass(frozen=True)
class RTHInfo:
    """What an RT-H checkpoint records about its training (config.json `rth`)."""

    checkpoint_id: str  # new per training run; recorded corrections name it
    vocabulary: tuple[str, ...]  # motions seen in training (others are out of vocabulary, still allowed)
    tasks: tuple[str, ...]  # instructions seen in training
    lookahead: int = 1  # the motion query was trained on the motion this many steps ahead
    mix: float = 0.5  # share of motion-query samples in training

    def to_json(self) -> dict[str, Any]:
        """For config.json."""
        return {**dataclasses.asdict(self), "vocabulary": list(self.vocabulary), "tasks": list(self.tasks)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RTHInfo":
        """From config.json."""
        return cls(str(d["checkpoint_id"]), tuple(d["vocabulary"]), tuple(d["tasks"]), int(d["lookahead"]),
                   float(d["mix"]))

    def knows_task(self, instruction: str) -> bool:
        """Whether the checkpoint was trained on this instruction (case-insensitive)."""
        return instruction.lower() in {t.lower() for t in self.tasks}

    @classmethod
    def new(cls, vocabulary, tasks, lookahead: int, mix: float) -> "RTHInfo":
        """A fresh id for a new training run."""
        return cls(uuid.uuid4().hex[:16], tuple(sorted(set(vocabulary))), tuple(sorted(set(tasks))), lookahead, mix)


def rth_info(model: Any) -> RTHInfo | None:
    """The RT-H record of a model, or None for a flat OpenVLA checkpoint."""
    table = model.config.extra.get(CONFIG_KEY) if hasattr(model.config, "extra") else None  # optional key
    return None if table is None else RTHInfo.from_json(table)


def require_rth(model: Any, what: str) -> RTHInfo:
    """The RT-H record, or MotionQueryError saying how to get an RT-H checkpoint."""
    info = rth_info(model)
    if info is None:
        raise MotionQueryError(f"{what} needs an RT-H checkpoint, but this one was trained without motion "
                               "queries (its config.json has no 'rth' table); fine-tune it with --rth on a "
                               "dataset labelled by `vla rth label`, or leave the motion out")
    return info


def set_rth_info(model: Any, info: RTHInfo) -> None:
    """Mark `model` as RT-H (kept in config.json by save_pretrained)."""
    model.config = dataclasses.replace(model.config, extra={**model.config.extra, CONFIG_KEY: info.to_json()})


def _task(instruction: str) -> str:
    if not isinstance(instruction, str):
        raise InstructionError(f"instruction must be a str, got {type(instruction).__name__}")
    if not instruction.strip():
        raise InstructionError("instruction is empty; say what the robot should do, e.g. 'pick up the red block'")
    return instruction.lower()


def motion_prompt_ids(tokenizer: Any, instruction: str) -> list[int]:
    """BOS + the motion query; the answer's first word token carries its own leading space."""
    return tokenizer.encode(MOTION_PROMPT.format(task=_task(instruction)))


def action_prompt_ids(tokenizer: Any, instruction: str, motion: str) -> list[int]:
    """BOS + the action query + "▁", as OpenVLA feeds its flat prompt."""
    ids = tokenizer.encode(ACTION_PROMPT.format(task=_task(instruction), motion=check_motion(motion).strip().lower()))
    return ids if ids[-1] == tokenizer.space_id else ids + [tokenizer.space_id]


def motion_target_ids(tokenizer: Any, motion: str) -> list[int]:
    """The motion's text tokens + EOS."""
    return tokenizer.tokenizer.encode(check_motion(motion).strip().lower(), add_special_tokens=False).ids + [
        tokenizer.eos_id]


@dataclasses.dataclass(frozen=True)
class Sample:
    """One training row: a motion query (action None) or an action query given `motion`."""

    instruction: str
    motion: str  # the target of a motion query; the conditioning of an action query
    action: np.ndarray | None = None  # normalized [A] for an action query
    weight: float = 1.0  # loss weight of this row


def encode_samples(processor: Any, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
    """Right-padded ids, mask, labels (only on the answer and EOS) and a per-row weight, for `model(...)`."""
    tok, rows, label_rows = processor.tokenizer, [], []
    for s in samples:
        if s.action is None:
            prompt, target = motion_prompt_ids(tok, s.instruction), motion_target_ids(tok, s.motion)
        else:
            prompt = action_prompt_ids(tok, s.instruction, s.motion)
            target = processor.action_tokenizer.encode(np.asarray(s.action)).tolist() + [tok.eos_id]
        rows.append(prompt + target)
        label_rows.append([IGNORE_INDEX] * len(prompt) + target)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, label_rows)):
        ids[i, : len(r)], labels[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), torch.tensor(lab), 1
    weights = torch.tensor([s.weight for s in samples], dtype=torch.float32)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "weights": weights}


def labelled_logits(model: Any, patches: torch.Tensor, batch: dict[str, torch.Tensor]
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits [n, V], target ids [n], row of each [n]) at every labelled position.

    The vocabulary head runs only where a label is: the full [B, L, 32000] logits of ~280 positions
    (mostly image patches) would cost far more than the trunk of a small model."""
    dev = model.device
    embeds, mask, labels = model.merge_image_tokens(batch["input_ids"].to(dev), patches,
                                                    batch["attention_mask"].to(dev), batch["labels"].to(dev))
    hidden = model.language_model.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    target = labels[:, 1:]  # position i predicts token i + 1
    rows, cols = torch.nonzero(target != IGNORE_INDEX, as_tuple=True)
    return model.language_model.lm_head(hidden[rows, cols]).float(), target[rows, cols], rows


def row_weighted_loss(logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor,
                      weights: torch.Tensor) -> torch.Tensor:
    """Token cross-entropy averaged per row, then weighted by row (motion-only corrections weigh more)."""
    per_token = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    n_rows, dev = weights.shape[0], logits.device
    counts = torch.zeros(n_rows, device=dev).index_add_(0, rows, torch.ones_like(per_token))
    per_row = torch.zeros(n_rows, device=dev).index_add_(0, rows, per_token) / counts.clamp(min=1)
    w = weights.to(dev)
    return (per_row * w).sum() / w.sum()


def weighted_loss(model: Any, pixel_values: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The RT-H training loss of an encoded batch (`encode_samples`), with the VIB's term where it has one."""
    patches, kl = model.embed_images_with_kl(pixel_values)  # kl: 0 without a bottleneck
    logits, targets, rows = labelled_logits(model, patches, batch)
    return add_kl_term(row_weighted_loss(logits, targets, rows, batch["weights"]), kl, model.config)


@torch.inference_mode()
def greedy_decode(model: Any, patches: torch.Tensor, rows: Sequence[Sequence[int]],
                  action_rows: Sequence[bool], n_action_tokens: int,
                  grammar: MotionGrammar | None = None) -> list[list[int]]:
    """Greedy decode of a mixed batch (`patches` from `model.embed_images`): action rows take
    `n_action_tokens` action ids, motion rows take text ids until EOS (at most MAX_MOTION_TOKENS).

    One prefill with the image, then one token per row per pass; with a `grammar`, motion rows are
    held to it and feed the tokens it forces in the same pass (`vla.rth.grammar`)."""
    tok = model.processor.tokenizer
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):  # left padding: every row's next token is at the last column
        ids[i, width - len(r):], mask[i, width - len(r):] = torch.tensor(list(r)), 1
    ids, mask = ids.to(model.device), mask.to(model.device)
    embeds, mask = model._prefill_inputs(ids, mask, patches)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = transformers.DynamicCache(config=model.language_model.config)
    padded = bool((mask == 0).any())
    out = model.language_model(inputs_embeds=embeds, attention_mask=mask if padded else None,
                                position_ids=position_ids, use_cache=True, logits_to_keep=1, **{CACHE_ARG: cache})
    if grammar is not None and not all(action_rows):
        return _grammar_passes(model, cache, out.logits[:, -1].float(), mask, position_ids[:, -1] + 1,
                               action_rows, n_action_tokens, grammar)
    at = model.action_tokenizer
    is_action = torch.tensor(list(action_rows), device=model.device)
    budget = n_action_tokens if all(action_rows) else max(n_action_tokens, MAX_MOTION_TOKENS)
    text_ban = torch.zeros(out.logits.shape[-1], dtype=torch.bool, device=model.device)
    text_ban[at.first_id: at.last_id + 1] = True  # action bins are not words
    ended = torch.zeros(len(rows), dtype=torch.bool, device=model.device)  # motion rows that said EOS
    steps: list[torch.Tensor] = []
    next_pos = position_ids[:, -1:] + 1
    for step in range(budget):
        logits = out.logits[:, -1].float()
        action_tok = logits[:, at.first_id: at.last_id + 1].argmax(-1) + at.first_id
        text_tok = logits.masked_fill(text_ban, float("-inf")).argmax(-1)
        token = torch.where(is_action, action_tok, text_tok)
        steps.append(token)
        ended |= ~is_action & (token == tok.eos_id)
        # Asking the GPU whether every row is done waits for it; action rows cannot be done before their
        # n_action_tokens, so the loop runs ahead of the device until then (the flat decode never waits).
        if step + 1 == budget or (step + 1 >= n_action_tokens and bool((is_action | ended).all())):
            break
        if padded:
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        out = model.language_model(input_ids=token[:, None], attention_mask=mask if padded else None,
                                   position_ids=next_pos, use_cache=True, **{CACHE_ARG: cache})
        next_pos = next_pos + 1
    grid = torch.stack(steps, 1).tolist()
    outputs = []
    for row, is_act in zip(grid, action_rows):
        if is_act:
            outputs.append(row[:n_action_tokens])
        else:  # through the first EOS (kept: it marks a finished answer), or the whole budget
            outputs.append(row[:row.index(tok.eos_id) + 1] if tok.eos_id in row else row)
    return outputs


def _grammar_passes(model: Any, cache: Any, first_logits: torch.Tensor, mask: torch.Tensor, next_pos: torch.Tensor,
                    action_rows: Sequence[bool], n_action_tokens: int, grammar: MotionGrammar) -> list[list[int]]:
    """The decode after the prefill when motion rows follow `grammar`: each pass feeds every row's
    chosen token plus what the grammar forces (and a speculative joiner), rows padded to one width."""
    at, pad_id = model.action_tokenizer, model.processor.tokenizer.pad_id
    n = len(action_rows)
    actions: list[list[int]] = [[] for _ in range(n)]
    cursors = [None if is_act else MotionCursor(grammar) for is_act in action_rows]
    pending: list[list[int]] = [[] for _ in range(n)]  # tokens each row feeds in the next pass
    spec: list[tuple[int, ...]] = [()] * n  # of those, the speculative joiner's
    next_pos = next_pos.tolist()
    # per row, the logits to decide from: [the end of the phrase before a speculative joiner, the last token fed]
    logits = first_logits.cpu()[:, None].expand(-1, 2, -1)
    while True:
        for r in range(n):
            cur = cursors[r]
            if cur is None:
                if len(actions[r]) < n_action_tokens:
                    tok_id = int(logits[r, 1, at.first_id: at.last_id + 1].argmax()) + at.first_id
                    actions[r].append(tok_id)
                    pending[r] = [tok_id] if len(actions[r]) < n_action_tokens else []
                continue
            pending[r], spec[r] = _motion_feed(cur, logits[r], spec[r])
        width = max(len(p) for p in pending)
        if width == 0:
            break
        dev = mask.device
        if all(c is None or c.done for c in cursors):  # only action tokens left: no host choices, no waiting
            _finish_actions(model, cache, mask, pending, next_pos, actions, n_action_tokens)
            break
        ids = torch.full((n, width), pad_id, dtype=torch.long)
        new_mask = torch.zeros((n, width), dtype=torch.long)
        pos = torch.zeros((n, width), dtype=torch.long)
        for r, p in enumerate(pending):
            ids[r, :len(p)], new_mask[r, :len(p)] = torch.tensor(p, dtype=torch.long), 1
            pos[r] = torch.arange(next_pos[r], next_pos[r] + width)
            next_pos[r] += len(p)
        mask = torch.cat([mask, new_mask.to(dev)], dim=1)
        out = model.language_model(input_ids=ids.to(dev), attention_mask=mask, position_ids=pos.to(dev),
                                   use_cache=True, **{CACHE_ARG: cache})
        last = torch.tensor([max(len(p) - 1, 0) for p in pending])
        before = (last - torch.tensor([len(s) for s in spec])).clamp(min=0)
        rows = torch.arange(n, device=dev)
        full = out.logits.float()
        logits = torch.stack([full[rows, before.to(dev)], full[rows, last.to(dev)]], 1).cpu()
    return [actions[r] if cursors[r] is None else cursors[r].tokens for r in range(n)]


def _finish_actions(model: Any, cache: Any, mask: torch.Tensor, pending: list[list[int]], next_pos: list[int],
                    actions: list[list[int]], n_action_tokens: int) -> None:
    """Decode the action rows' remaining tokens into `actions`, one token per pass, reading them back
    once at the end (rows with nothing pending feed a masked pad)."""
    at, dev = model.action_tokenizer, mask.device
    left = n_action_tokens - max(len(actions[r]) for r, p in enumerate(pending) if p)
    live = torch.tensor([bool(p) for p in pending], device=dev)
    token = torch.tensor([p[0] if p else model.processor.tokenizer.pad_id for p in pending], device=dev)
    pos = torch.tensor(next_pos, device=dev)
    steps = []
    for _ in range(left):
        mask = torch.cat([mask, live.long()[:, None]], dim=1)
        out = model.language_model(input_ids=token[:, None], attention_mask=mask, position_ids=pos[:, None],
                                   use_cache=True, **{CACHE_ARG: cache})
        pos = pos + 1
        token = out.logits[:, -1].float()[:, at.first_id: at.last_id + 1].argmax(-1) + at.first_id
        steps.append(token)
    grid = torch.stack(steps, 1).tolist()
    for r, p in enumerate(pending):
        if p:
            actions[r].extend(grid[r])


def _motion_feed(cur: MotionCursor, logits: torch.Tensor, fed_spec: tuple[int, ...]
                 ) -> tuple[list[int], tuple[int, ...]]:
    """One motion row's choice from the last pass: (tokens to feed next, of which a speculative joiner).

    `logits` [2, V]: at the end of the phrase before `fed_spec` (the joiner fed speculatively, if
    any), and at the last token fed."""
    if cur.done:
        return [], ()
    g = cur.g
    if fed_spec:  # end the answer at the finished phrase, or go on after the joiner already fed
        new = cur.take(g.eos if logits[0, g.eos] >= logits[0, g.joiner[0]] else g.joiner[0])
        if cur.done:
            return [], ()
        extra = new[len(fed_spec):]  # forced after the joiner and not fed yet: feed them before choosing
        if extra:
            spec = cur.speculation()
            return [*extra, *spec], spec
    choices = cur.allowed()
    new = cur.take(choices[int(logits[1, choices].argmax())])
    if cur.done:  # a finished answer needs no pass
        return [], ()
    spec = cur.speculation()
    return [*new, *spec], spec


@torch.inference_mode()
def _patches(model: Any, images: Sequence[Any]) -> torch.Tensor:
    """Patch embeddings of a batch of observations (images, or {role: image} for a multi-camera checkpoint)."""
    return model.embed_images(stack_role_images(model.processor.process_images, images, model.config.image_roles))


def _motion_text(model: Any, ids: list[int]) -> str:
    tok = model.processor.tokenizer
    finished = bool(ids) and ids[-1] == tok.eos_id
    text = tok.tokenizer.decode(ids[:-1] if finished else ids).strip()
    if not finished:
        logger.warning("motion answer did not end within %d tokens: %r", MAX_MOTION_TOKENS, text)
    return text or STOP  # an immediately ended answer: no motion words at all


_LOGGED_OOV: set[tuple[str, str]] = set()  # (checkpoint id, motion): each is logged once, not at every step


def _log_out_of_vocabulary(info: RTHInfo, motions: Sequence[str]) -> None:
    known = set(info.vocabulary)
    for m in motions:
        key = (info.checkpoint_id, m.strip().lower())
        if key[1] not in known and key not in _LOGGED_OOV:
            _LOGGED_OOV.add(key)
            logger.info("motion %r is out of the checkpoint's training vocabulary (%d motions); the action "
                        "query follows it anyway (logged once per checkpoint)", m, len(known))


def _checked_batch(images: Sequence[Any], instructions: Sequence[str], *others: Sequence[Any]) -> None:
    if isinstance(instructions, str):
        raise InstructionError("instructions must be a list of strings; for one call use the singular function")
    if len(images) == 0 or any(len(x) != len(images) for x in (instructions, *others)):
        raise InstructionError(f"got {len(images)} images, {len(instructions)} instructions and "
                               f"{[len(x) for x in others]} motions; give one of each per observation")


_GRAMMARS: dict[tuple[str, tuple[str, ...]], MotionGrammar | None] = {}


def motion_grammar(model: Any) -> MotionGrammar | None:
    """The grammar of the checkpoint's motion vocabulary (built once per checkpoint and vocabulary),
    one phrase per axis of the default words; None, logged, where its tokenizer does not join phrases
    token by token."""
    info = require_rth(model, "a motion grammar")
    key = (info.checkpoint_id, info.vocabulary)
    if key not in _GRAMMARS:
        tok = model.processor.tokenizer
        _GRAMMARS[key] = MotionGrammar.from_vocabulary(
            info.vocabulary, lambda text: tok.tokenizer.encode(text, add_special_tokens=False).ids, tok.eos_id,
            MAX_MOTION_TOKENS, word_table(None))
        if _GRAMMARS[key] is None:
            logger.warning("this checkpoint's tokenizer does not write a motion as its phrases' tokens joined; "
                           "the motion query decodes free text")
    return _GRAMMARS[key]


def predict_motions(model: Any, images: Sequence[Any], instructions: Sequence[str], *,
                    free_text: bool = False) -> list[str]:
    """The motion query for a batch: one motion string per image.

    The answer is held to the checkpoint's phrases joined by " and" (`vla.rth.grammar`), which also
    saves decode passes; `free_text=True` decodes any text, as RT-H's paper does."""
    require_rth(model, "predict_motion")
    _checked_batch(images, instructions)
    tok = model.processor.tokenizer
    rows = [motion_prompt_ids(tok, s) for s in instructions]
    out = greedy_decode(model, _patches(model, images), rows, [False] * len(rows), 0,
                        None if free_text else motion_grammar(model))
    return [_motion_text(model, ids) for ids in out]


def predict_actions_given(model: Any, images: Sequence[Any], instructions: Sequence[str], motions: Sequence[str],
                          unnorm_key: str | None = None) -> np.ndarray:
    """The action query for a batch with the given motions: un-normalized actions [B, A]."""
    info = require_rth(model, "a motion for the action query")
    _checked_batch(images, instructions, motions)
    _log_out_of_vocabulary(info, motions)
    _, stats = select_stats(model.norm_stats, unnorm_key)
    tok = model.processor.tokenizer
    rows = [action_prompt_ids(tok, s, m) for s, m in zip(instructions, motions)]
    out = greedy_decode(model, _patches(model, images), rows, [True] * len(rows), stats.dim)
    return unnormalize_actions(model.action_tokenizer.decode(np.asarray(out)), stats)


def predict_lookahead(model: Any, images: Sequence[Any], instructions: Sequence[str],
                      motions: Sequence[str], unnorm_key: str | None = None, *,
                      free_text: bool = False) -> tuple[np.ndarray, list[str]]:
    """One batched call: actions for `motions` (predicted at the previous step) and the next motions
    (held to the checkpoint's phrases unless `free_text`, as in `predict_motions`)."""
    info = require_rth(model, "look-ahead prediction")
    _checked_batch(images, instructions, motions)
    _log_out_of_vocabulary(info, motions)
    _, stats = select_stats(model.norm_stats, unnorm_key)
    tok = model.processor.tokenizer
    b = len(images)
    rows = [action_prompt_ids(tok, s, m) for s, m in zip(instructions, motions)]
    rows += [motion_prompt_ids(tok, s) for s in instructions]
    patches = _patches(model, images)  # one vision pass serves both queries
    out = greedy_decode(model, torch.cat([patches, patches]), rows, [True] * b + [False] * b, stats.dim,
                        None if free_text else motion_grammar(model))
    actions = unnormalize_actions(model.action_tokenizer.decode(np.asarray(out[:b])), stats)
    return actions, [_motion_text(model, ids) for ids in out[b:]]


def predict_action(model: Any, image: Any, instruction: str, motion: str | None = None,
                   unnorm_key: str | None = None) -> tuple[np.ndarray, str]:
    """(action, motion used): with `motion=None` the motion query runs first."""
    if motion is None:
        motion = predict_motions(model, [image], [instruction])[0]
    return predict_actions_given(model, [image], [instruction], [motion], unnorm_key)[0], motion
