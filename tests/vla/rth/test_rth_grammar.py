"""The motion grammar: what it allows and forces, and a grammar decode that matches a plain
token-by-token greedy decode under the same grammar while taking fewer passes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import vla
from vla.model.multi_image import stack_role_images
from vla.rth.grammar import MotionCursor, MotionGrammar
from vla.rth.motions import DEFAULT_WORDS, STOP, word_table
from vla.rth.query import (MAX_MOTION_TOKENS, motion_grammar, motion_prompt_ids, predict_actions_given,
                           predict_lookahead, predict_motions, rth_info, set_rth_info)

from rth_fixtures import COLOURS, MOTIONS, TASK, colour_episodes

WORDS = [p for pair in DEFAULT_WORDS.values() for p in pair]


@pytest.fixture(scope="module")
def tok(rth_model):
    """The Llama-2 tokenizer every checkpoint of ours carries."""
    return rth_model.processor.tokenizer


def grammar_of(tok, vocabulary, max_tokens=MAX_MOTION_TOKENS):
    return MotionGrammar.from_vocabulary(vocabulary, lambda t: tok.tokenizer.encode(t, add_special_tokens=False).ids,
                                         tok.eos_id, max_tokens, word_table(None))


def ids(tok, text):
    return tok.tokenizer.encode(text, add_special_tokens=False).ids


def write(cursor, tok, motion):
    """Walk a motion's tokens through the cursor (forced ones arrive on their own); returns the decisions."""
    target, decisions = ids(tok, motion) + [tok.eos_id], []
    while not cursor.done:
        token = target[len(cursor.tokens)]
        decisions.append(token)
        cursor.take(token)
    assert cursor.tokens == target
    return decisions


def test_every_default_motion_is_its_phrases_tokens_joined(tok):
    vocabulary = [*WORDS, STOP, "move arm forward and close gripper", "move arm down and move arm left and open gripper"]
    g = grammar_of(tok, vocabulary)
    assert g is not None and len(g.phrases) == len(WORDS) + 1 and g.joiner == tuple(ids(tok, "and"))


def test_forced_tokens_come_without_a_decision(tok):
    g = grammar_of(tok, [*WORDS, STOP])
    # '▁move' -> '▁arm' forced; '▁close' -> '▁g' 'ri' 'pper' forced; '▁back' -> 'ward' forced
    decisions = write(MotionCursor(g), tok, "move arm backward and close gripper")
    assert [tok.tokenizer.id_to_token(t) for t in decisions] == ["▁move", "▁back", "▁and", "▁close", "</s>"]


def test_stop_is_alone_and_an_axis_is_named_once(tok):
    g = grammar_of(tok, [*WORDS, STOP])
    c = MotionCursor(g)
    c.take(ids(tok, "stop")[0])
    assert c.done and c.tokens == ids(tok, "stop") + [tok.eos_id]  # nothing may follow "stop": EOS forced
    c = MotionCursor(g)
    write_prefix = ids(tok, "move arm up and")
    for t in write_prefix:
        if len(c.tokens) < len(write_prefix):
            c.take(write_prefix[len(c.tokens)])
    assert ids(tok, "stop")[0] not in c.allowed()  # "stop" is never joined
    c.take(ids(tok, "move")[0])  # forces "▁arm"
    # "up" is used and "down" is its axis' other word: neither may follow; other axes may
    assert ids(tok, "up")[0] not in c.allowed() and ids(tok, "down")[0] not in c.allowed()
    assert ids(tok, "left")[0] in c.allowed()
    with pytest.raises(ValueError, match="not allowed"):
        c.take(ids(tok, "down")[0])


def test_speculation_and_the_token_cap(tok):
    g = grammar_of(tok, ["move arm up", "move arm down", "move arm left", "close gripper"])
    c = MotionCursor(g)
    c.take(ids(tok, "move")[0])
    assert c.speculation() == ()  # a direction is still to choose
    c.take(ids(tok, "up")[0])
    assert c.speculation() == g.joiner and c.allowed() == [tok.eos_id, g.joiner[0]]
    c.take(g.joiner[0])
    c.take(ids(tok, "close")[0])  # "close gripper"; then only "move arm left" is left ("down" is up's axis)
    assert c.speculation() == g.joiner
    c.take(g.joiner[0])  # forced through to EOS: nothing is left to choose
    assert c.done and tok.tokenizer.decode(c.tokens[:-1]) == "move arm up and close gripper and move arm left"
    capped = grammar_of(tok, ["move arm up", "move arm left"], max_tokens=3)
    c = MotionCursor(capped)
    c.take(ids(tok, "move")[0])
    c.take(ids(tok, "up")[0])
    assert c.done  # at the cap no joiner: the finished phrase ends the answer


def test_a_tokenizer_that_merges_across_words_gets_no_grammar():
    merged = {"move arm up": [1, 2], "move": [1], "arm": [3], "up": [4], "and": [5]}
    assert MotionGrammar.from_vocabulary(["move arm up and move"], lambda t: merged.get(t, [9, 9]), 2, 24) is None


def reference_decode(model, image, instruction, grammar):
    """Constrained greedy, one token per full forward (no cache, no forced-token jumps)."""
    patches = model.embed_images(stack_role_images(model.processor.process_images, [image], model.config.image_roles))
    cursor, prompt = MotionCursor(grammar), motion_prompt_ids(model.processor.tokenizer, instruction)
    with torch.inference_mode():
        while not cursor.done:
            ids_ = torch.tensor([prompt + cursor.tokens])
            embeds, mask = model._prefill_inputs(ids_, torch.ones_like(ids_), patches)
            logits = model.language_model(inputs_embeds=embeds, attention_mask=mask).logits[0, -1]
            allowed = cursor.allowed()
            cursor.take(allowed[int(logits[allowed].argmax())])
    return cursor.tokens


@pytest.mark.parametrize("seed", [3, 4])
def test_grammar_decode_matches_token_by_token_greedy(rth_model, seed):
    # an untrained model wanders through long answers: joiners, speculation, rows of unequal length
    model = vla.OpenVLA.from_preset("tiny", norm_stats=rth_model.norm_stats, seed=seed)
    set_rth_info(model, rth_info(rth_model))
    grammar = motion_grammar(model)
    images = [e.images[0] for e in colour_episodes(3, seed=seed)]
    motions = predict_motions(model, images, [TASK] * 3)
    tok = model.processor.tokenizer
    for image, motion in zip(images, motions):
        expected = reference_decode(model, image, TASK, grammar)
        assert motion == tok.tokenizer.decode(expected[:-1])
    # the look-ahead's motion rows decode beside action rows and give the same answers and actions
    actions, ahead = predict_lookahead(model, images, [TASK] * 3, list(MOTIONS))
    assert ahead == motions
    np.testing.assert_array_equal(actions, predict_actions_given(model, images, [TASK] * 3, list(MOTIONS)))


def count_passes(model, fn):
    calls = []
    handle = model.language_model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        out = fn()
    finally:
        handle.remove()
    return out, len(calls)


def test_trained_answers_are_unchanged_and_take_fewer_passes(rth_model):
    images = [e.images[0] for e in colour_episodes(3, seed=5)]
    free, free_passes = count_passes(rth_model, lambda: predict_motions(rth_model, images, [TASK] * 3, free_text=True))
    held, held_passes = count_passes(rth_model, lambda: predict_motions(rth_model, images, [TASK] * 3))
    assert held == free == list(MOTIONS)
    # longest answer "move arm left and close gripper" + EOS: 9 tokens, so 9 passes free (prefill + 8);
    # held: prefill -> "▁move"(+arm) -> "▁left"(+and) -> "▁close"(+g ri pper) -> EOS = 4 passes
    assert (free_passes, held_passes) == (9, 4)
    one = COLOURS[1][None, None].repeat(32, 0).repeat(32, 1)
    (_, ahead), passes = count_passes(rth_model, lambda: predict_lookahead(rth_model, [one], [TASK], ["stop"]))
    assert ahead == [MOTIONS[1]] and passes == 7  # as many as the action query's 7 tokens alone
