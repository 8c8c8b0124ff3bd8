"""`stream`: per frame, as frames arrive, the heads' predictions and the generated transcript (models with a
transcript decoder). Frame t is emitted once frame t+1 is there (its labels and narration describe [t, t+1)),
keeping one KV cache across frames; `use_cache=False` is the naive reference that re-runs the LM over the whole
sequence so far at every step."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterable, Iterator

import torch

from .outputs import decode_click_xy
from .transcript import Generation, LMContext

if TYPE_CHECKING:
    from .decoder import TaskAwareDecoder


@dataclass
class FrameStep:
    """What `stream` yields for frame `t` of every clip in the batch."""

    t: int
    action_logits: torch.Tensor  # [B, num_actions]
    key_logits: torch.Tensor  # [B, num_keys]
    modifier_logits: torch.Tensor  # [B, num_modifiers]
    click_logits: torch.Tensor  # [B, N]
    click_xy: torch.Tensor  # [B, 2] decoded click position (normalized)
    token_ids: list[list[int]]  # per clip: the frame's transcript tokens (eof not included)
    texts: list[str] | None  # per clip: decoded text (None when the model has no tokenizer)
    token_logprobs: list[list[float]]  # per clip: log-prob of each emitted token, then of the eof


@dataclass
class _Pending:
    """The newest frame, waiting for the next one (its motion summary reads the change into it)."""

    t: int
    token_xy: torch.Tensor  # [B, N, 2]
    token_cell: tuple[float, float]


@torch.no_grad()
def stream(
    model: "TaskAwareDecoder",
    clip_pixels: torch.Tensor | Iterable[torch.Tensor],
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor | None = None,
    *,
    use_cache: bool = True,
    forced_ids: torch.Tensor | None = None,
    forced_mask: torch.Tensor | None = None,
    **generation: object,
) -> Iterator[FrameStep]:
    """Per frame, as frames arrive: the heads' predictions and the generated transcript.

    Frame t is handled when frame t+1 arrives (the last one when the source ends): its labels and
    narration describe the interval [t, t+1), whose effect first shows in frame t+1 (the motion
    summary that the heads and the LM's visual tokens read). One frame of latency, nothing recomputed.

    clip_pixels: [B, T, 3, H, W], or any iterable of frames [B, 3, H, W] (a live source).
    prompt_ids / prompt_mask: [B, L] right-padded (mask None = all real).
    use_cache: True keeps one KV cache across frames (prompt and history are never recomputed);
      False is the naive reference that re-runs the LM over the whole sequence at every step.
    forced_ids / forced_mask [B, T, S]: score these transcripts instead of generating (teacher
      forcing through the same incremental path); `token_logprobs` then scores them.
    generation: any field of `transcript.Generation`, over the model's defaults (`model.max_text_tokens`,
      `model.eof_threshold`):
      - Greedy by default. With `eof_threshold` set, a frame stays silent when p(eof) >= it at the frame's
        first token, otherwise the most likely other token starts its text (None: plain argmax over every
        token; eof then wins whenever it beats each single token, which silences frames where speaking is
        likely but the first word is uncertain).
      - do_sample draws from softmax(logits / temperature), restricted to the top_k tokens if set, with
        `generator` for reproducible draws.
      - early_stop: end a frame's text loop once every clip has its eof. False runs max_text_tokens + 1
        steps every frame, so every process of a ZeRO-3 run does the same number of forwards.
    Clips whose text ended earlier feed pad tokens that are masked out of attention and positions, so
    each clip's result does not depend on the others in the batch.
    """
    transcript, lm = model.transcript, model.text
    if transcript is None:
        raise ValueError("stream() needs a model with a transcript decoder (model=parallel)")
    if model.config.clip_encoding != "frames":
        raise ValueError("stream() needs model.clip_encoding=frames: with `video`, frame t's encoder tokens "
                         "attend to later frames, which have not arrived yet")
    if not model.config.temporal_causal:
        raise ValueError("stream() needs model.temporal_causal=true: otherwise frame t's heads read later frames")
    settings: Generation = replace(transcript.generation,
                                   **{k: v for k, v in generation.items() if not (k == "max_text_tokens" and v is None)})
    transcript.ids()
    prompt_mask = torch.ones_like(prompt_ids, dtype=torch.bool) if prompt_mask is None else prompt_mask.bool()
    frames = clip_pixels.unbind(1) if torch.is_tensor(clip_pixels) else clip_pixels

    context = LMContext(lm, use_cache)
    hidden = context.step(transcript.embed(lm, prompt_ids), transcript.prompt_valid(prompt_mask))
    prompt = model.project_prompt(transcript.prompt_hidden(hidden, prompt_mask))
    history: list[torch.Tensor] = []  # frame tokens [B, 1, N, D] of every frame so far (the causal trunk reads all)
    pending: _Pending | None = None
    previous = None

    def emit(last: bool) -> FrameStep:
        """Everything for the pending frame t: history ends with it (last) or with frame t+1."""
        t = pending.t
        tokens = torch.cat(history, dim=1)
        i = tokens.shape[1] - (1 if last else 2)  # frame t's index in `tokens`
        lm_visual = transcript.visual_tokens(lm, tokens[:, i:i + 1], model.trunk.motion_of_frame(tokens, i))[:, 0]
        B = lm_visual.shape[0]
        if t > 0:  # close the previous frame's text with its eof, then this frame's visual tokens
            eof = torch.full((B, 1), transcript.ids()[0], device=lm_visual.device)
            lm_visual = torch.cat([transcript.embed(lm, eof), lm_visual], dim=1)
        hidden = context.step(lm_visual, torch.ones(B, lm_visual.shape[1], dtype=torch.bool, device=lm_visual.device))

        x = model.trunk(tokens, prompt, prompt_mask)[:, i:i + 1]  # causal: frames <= t (+ motion into t+1)
        heads = {k: val[:, 0] for k, val in model.heads(x, tokens[:, i:i + 1]).items()}

        forced = None if forced_ids is None else (forced_ids[:, t], forced_mask[:, t].sum(-1))
        ids, logprobs = transcript.generate_frame(lm, context, hidden[:, -1], settings, forced)
        return FrameStep(t=t, **heads, click_xy=decode_click_xy(heads["click_logits"], pending.token_xy,
                                                                 pending.token_cell),
                         token_ids=ids, texts=transcript.texts(ids), token_logprobs=logprobs)

    for t, frame in enumerate(frames):
        model.trunk.check_frames(t + 1)
        # visible_tokens picks patches by change against the previous frame: give it that frame too.
        pair = frame.unsqueeze(1) if previous is None or model.config.visible_tokens is None else \
            torch.stack([previous, frame], dim=1)
        visual, token_xy, token_cell, _ = model.encode_visual(pair)
        previous = frame
        history.append(visual[:, -1:] + model.token_pos(token_xy[:, -1:]))  # [B, 1, N, D]
        if pending is not None:  # frame t-1 can read its change into frame t now
            yield emit(last=False)
        pending = _Pending(t, token_xy[:, -1], token_cell)
    if pending is not None:  # the source ended: the last frame has no next one (zero change, as in training)
        yield emit(last=True)
