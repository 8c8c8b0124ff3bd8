"""model=parallel streaming inference: KV-cached path vs the naive reference, scoring, batching, sampling."""
from __future__ import annotations

import pytest
import torch

from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.models.transcript import pick_token
from tests.test_parallel import TEXTS, B, T, make_batch, make_cfg, make_model, train_steps, transcript_logits


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer("small")


@pytest.fixture(scope="module")
def trained(tokenizer):
    """A tiny model that learned the batch's narration: texts of different lengths per clip and frame."""
    model = make_model(tokenizer)
    train_steps(model, make_batch(tokenizer), make_cfg(), steps=60)
    return model


def run(model, batch, **kw):
    return list(model.stream(batch["pixels"], batch["prompt_ids"], batch["prompt_mask"], **kw))


def test_teacher_forced_logprobs_equal_step_by_step_scoring(tokenizer):
    model = make_model(tokenizer).eval()
    batch = make_batch(tokenizer)
    with torch.no_grad():
        out = model(batch)
    logp = torch.log_softmax(transcript_logits(out).float(), dim=-1)
    steps = run(model, batch, forced_ids=batch["transcript_ids"], forced_mask=batch["transcript_mask"])
    assert len(steps) == T
    for t, step in enumerate(steps):
        for b in range(B):
            n = int(batch["transcript_mask"][b, t].sum())
            targets = out.transcript_targets[b, t, :n + 1]  # the frame's tokens, then its eof
            want = logp[b, t, torch.arange(n + 1), targets]
            torch.testing.assert_close(torch.tensor(step.token_logprobs[b]), want, rtol=1e-4, atol=1e-5)
            assert step.token_ids[b] == batch["transcript_ids"][b, t, :n].tolist()
        # The heads see the same history in both paths, so they agree frame by frame.
        torch.testing.assert_close(step.action_logits, out.action_logits[:, t], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(step.click_logits, out.click_logits[:, t], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(step.click_xy, out.click_xy[:, t])


@pytest.mark.e2e  # trains the tiny model first (minutes of CPU)
def test_greedy_streaming_equals_naive_and_transcribes(trained, tokenizer):
    batch = make_batch(tokenizer)
    cached = run(trained, batch)
    naive = run(trained, batch, use_cache=False)
    assert [s.token_ids for s in cached] == [s.token_ids for s in naive]
    for a, b in zip(cached, naive):
        torch.testing.assert_close(a.action_logits, b.action_logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.tensor(sum(a.token_logprobs, [])), torch.tensor(sum(b.token_logprobs, [])),
                                   rtol=1e-4, atol=1e-5)
    # The texts have different lengths per clip in the same frame (the batched per-step masking is exercised).
    assert [[s.texts[b] for s in cached] for b in range(B)] == TEXTS
    assert trained.transcribe(batch) == TEXTS


@pytest.mark.e2e  # trains the tiny model first (minutes of CPU)
def test_batched_streaming_equals_one_clip_at_a_time(trained, tokenizer):
    batch = make_batch(tokenizer)
    together = run(trained, batch)
    for b in range(B):
        alone = list(trained.stream(batch["pixels"][b:b + 1], batch["prompt_ids"][b:b + 1],
                                    batch["prompt_mask"][b:b + 1]))
        for s_all, s_one in zip(together, alone):
            assert s_one.token_ids[0] == s_all.token_ids[b]
            torch.testing.assert_close(s_one.action_logits[0], s_all.action_logits[b], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(torch.tensor(s_one.token_logprobs[0]), torch.tensor(s_all.token_logprobs[b]),
                                       rtol=1e-4, atol=1e-5)


@pytest.mark.e2e  # trains the tiny model first (minutes of CPU)
def test_frames_can_arrive_one_by_one(trained, tokenizer):
    batch = make_batch(tokenizer)
    arrived = []

    def live():  # a generator: no length, frames come one at a time
        for t, frame in enumerate(batch["pixels"].unbind(1)):
            arrived.append(t)
            yield frame

    got = []
    for step in trained.stream(live(), batch["prompt_ids"], batch["prompt_mask"]):
        # Frame t comes out once frame t+1 is in (its label is the interval [t, t+1)), the last at the end.
        assert arrived[-1] == min(step.t + 1, T - 1)
        got.append(step)
    assert [s.t for s in got] == list(range(T))
    assert [s.token_ids for s in got] == [s.token_ids for s in run(trained, batch)]


@pytest.mark.e2e  # trains the tiny model first (minutes of CPU)
def test_kv_cache_never_recomputes_prompt_or_history(trained, tokenizer):
    batch = make_batch(tokenizer)
    fed = []
    hook = trained.text.model.register_forward_pre_hook(
        lambda mod, args, kwargs: fed.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True)
    try:
        steps = run(trained, batch)
        cached_fed, fed[:] = list(fed), []
        run(trained, batch, use_cache=False)
        naive_fed = list(fed)
    finally:
        hook.remove()
    v, L = trained.transcript.config.lm_visual_tokens, batch["prompt_ids"].shape[1]
    text_steps = sum(max(len(s.token_ids[b]) for b in range(B)) for s in steps)  # tokens fed per frame
    # Prompt once, then per frame (eof of the previous frame +) v visual tokens, then one token a step.
    assert cached_fed[0] == L and sum(cached_fed) == L + T * v + (T - 1) + text_steps
    assert len(naive_fed) == len(cached_fed) and naive_fed[-1] == sum(cached_fed)  # naive re-reads it all


@pytest.mark.e2e  # trains the tiny model first (minutes of CPU)
def test_sampling_is_seeded_and_top_k_1_is_greedy(trained, tokenizer):
    batch = make_batch(tokenizer)

    def sample(seed, use_cache=True, **kw):
        g = torch.Generator().manual_seed(seed)
        return [s.token_ids for s in run(trained, batch, do_sample=True, generator=g, use_cache=use_cache, **kw)]

    assert sample(0, temperature=3.0) == sample(0, temperature=3.0)
    assert sample(0, temperature=3.0) == sample(0, use_cache=False, temperature=3.0)
    assert sample(0, temperature=3.0) != sample(1, temperature=3.0)
    assert trained.transcript.generation.eof_threshold is None  # plain argmax, what top_k=1 sampling does
    assert sample(5, top_k=1) == [s.token_ids for s in run(trained, batch)]
    with pytest.raises(ValueError, match="temperature"):
        sample(0, temperature=0.0)


@pytest.mark.e2e  # trains the tiny model first (minutes of CPU)
def test_text_is_capped_at_max_text_tokens(trained, tokenizer):
    batch = make_batch(tokenizer)
    for step in run(trained, batch, max_text_tokens=1):
        assert all(len(ids) <= 1 for ids in step.token_ids)
        assert all(len(lp) == len(ids) + 1 for lp, ids in zip(step.token_logprobs, step.token_ids))


def test_streaming_refuses_configs_that_would_look_ahead(tokenizer):
    batch = make_batch(tokenizer)
    with pytest.raises(ValueError, match="clip_encoding=frames"):
        run(make_model(tokenizer, "model.clip_encoding=video"), batch)
    with pytest.raises(ValueError, match="temporal_causal"):
        run(make_model(tokenizer, "model.temporal_causal=false"), batch)


def test_greedy_speaks_when_eof_is_less_likely_than_all_words_together():
    # p(eof) = 0.4 and five words at 0.12 each: plain argmax picks eof (the frame stays silent) although
    # speaking is more likely (0.6); the default rule speaks and picks the best word.
    eof = 0
    probs = torch.tensor([[0.4, 0.12, 0.12, 0.13, 0.12, 0.11],   # speak: word 3
                          [0.6, 0.08, 0.08, 0.08, 0.08, 0.08]])  # silent
    logits = probs.log()
    assert pick_token(logits, eof, eof_threshold=None).tolist() == [0, 0]
    assert pick_token(logits, eof, eof_threshold=0.5).tolist() == [3, 0]
    assert pick_token(logits, eof, eof_threshold=0.35).tolist() == [0, 0]  # stricter: more silence


@pytest.mark.e2e  # trains the tiny model first (minutes of CPU)
def test_eof_threshold_trades_missed_narration_for_false_text(trained, tokenizer):
    batch = make_batch(tokenizer)

    def frames_with_text(threshold):
        return sum(len(ids) > 0 for s in run(trained, batch, eof_threshold=threshold) for ids in s.token_ids)

    counts = [frames_with_text(th) for th in (0.001, 0.5, 0.999)]
    assert counts[0] <= counts[1] <= counts[2]
    assert counts[0] == 0 and counts[2] == B * T  # always silent / always speaking


@pytest.mark.parametrize("bad", ["0", "1.0", "1.5"])
def test_eof_threshold_outside_0_1_is_a_clear_error(tokenizer, bad):
    with pytest.raises(ValueError, match="model.eof_threshold"):
        make_model(tokenizer, f"model.eof_threshold={bad}")
