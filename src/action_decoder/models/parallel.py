"""The new architecture, "parallel heads" (docs/design.md §4, `model=parallel`): all heads from shared
per-frame features in one pass, plus an autoregressive per-frame transcript decoder through the
Qwen LM head, trained teacher-forced and run streaming with a KV cache.

The transcript decoder is the SAME LoRA-tuned `Qwen3ForCausalLM` that reads the prompt (one copy).
It reads, causally:

    [prompt tokens, visual tokens of frame 0 (v of them), transcript tokens of frame 0, eof,
     visual tokens of frame 1, transcript tokens of frame 1, eof, ...]

so frame t's text is predicted from its visual tokens, the prompt and the texts of frames 0..t-1.
The v visual tokens of a frame are learned queries attending over its encoder tokens, plus the
frame's motion summary (its change from frame t-1 and into frame t+1: narration on frame t, like
its action label, is what happens in [t, t+1)), projected to the LM width (`lm_pool` +
`lm_visual_proj`: with the text LoRA, what the transcript trains).

encode(batch) -> Features
  1. Per-frame visual tokens from the OneVision encoder (shared base: `encode_visual`).
  2. ONE teacher-forced LM pass over the whole clip's interleaved sequence. Every frame block has a
     fixed layout, v visual slots + S+1 text slots (S = longest text in the batch): the text, its
     eof, then pad slots. Pad slots (and prompt padding) are masked out as keys and skipped by the
     position ids, so each real token sees exactly what it would see in the streaming path.
  3. From that pass: prompt features (hidden states at the prompt), the hidden states at each
     frame's visual slots, and those at the S+1 slots that predict the frame's tokens + eof.
decode(features) -> Outputs
  1. Shared per-frame features x [B, T, Dd] from the original's frame trunk (pooling, causal temporal
     layers, prompt cross-attn). (The heads never read the LM: in the teacher-forced pass its visual slots
     attend to the reference narration of earlier frames, which inference does not have.)
  2. Action / key / modifier / click heads, each reading only x (and the visual tokens for click):
     no head reads another head's output.
  3. Transcript: the (temperature-scaled) hidden states at the predicting slots and the LM head; the loss
     makes logits from them at target rows only (losses.transcript_loss).

stream(...) yields per frame the heads' predictions + the generated text as frames arrive (frame t
once frame t+1 is there: its labels and narration describe [t, t+1)), keeping one KV cache across frames;
`stream(..., use_cache=False)` is the naive reference that re-runs the LM over the whole sequence
so far at every step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from .base import DecoderConfig, LearnedTokens, TaskAwareDecoderBase
from .losses import IGNORE_INDEX
from .onevision_encoder import OneVisionEncoder
from .outputs import Features, Outputs, decode_click_xy

@dataclass
class ParallelConfig(DecoderConfig):
    """`cfg.model` of the parallel decoder (conf/model/parallel.yaml documents each knob)."""

    lm_visual_tokens: int = 4
    max_text_tokens: int = 16
    eof_threshold: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eof_threshold is not None and not 0.0 < float(self.eof_threshold) < 1.0:
            raise ValueError(f"model.eof_threshold={self.eof_threshold}: use null (plain argmax) or a probability in (0, 1)")
        if int(self.lm_visual_tokens) < 1 or int(self.max_text_tokens) < 0:
            raise ValueError("model.lm_visual_tokens must be >= 1 and model.max_text_tokens >= 0")


@dataclass
class Interleaved:
    """The teacher-forced LM input of a batch of clips (see the module docstring for the layout)."""

    embeds: torch.Tensor  # [B, L + T*(v+S+1), Dt]
    valid: torch.Tensor  # [B, L + T*(v+S+1)] bool: real tokens (attended to, counted in positions)
    positions: torch.Tensor  # [B, L + T*(v+S+1)] position ids: running count of real tokens
    targets: torch.Tensor  # [B, T, S+1] token predicted by each frame's slots v-1 .. v+S-1; -100 past the eof


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


class ParallelHeadsDecoder(TaskAwareDecoderBase):
    def __init__(
        self,
        vision: OneVisionEncoder,
        text: nn.Module,
        config: ParallelConfig,
        num_actions: int,
        num_keys: int,
        num_modifiers: int,
        tokenizer: Any | None = None,
    ) -> None:
        super().__init__(vision, text, config)
        d, dt = config.d_model, int(text.config.hidden_size)
        self.tokenizer = tokenizer  # decodes generated ids in `stream` / `transcribe` (not a module)
        self.eof_token_id = getattr(tokenizer, "eof_token_id", None)
        self.pad_token_id = getattr(tokenizer, "pad_token_id", None)
        self._build_frame_trunk()
        self.action_head = nn.Linear(d, num_actions)
        self.key_head = nn.Linear(d, num_keys)
        self.modifier_head = nn.Linear(d, num_modifiers)
        self._build_click_head()
        v = int(config.lm_visual_tokens)
        self.lm_query = LearnedTokens(v, d)
        self.lm_pool = nn.MultiheadAttention(d, config.num_heads, dropout=config.dropout, batch_first=True)
        self.lm_visual_proj = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, dt))
        # Visual tokens enter the LM's residual stream next to its token embeddings: start them at the
        # embeddings' scale. At nn.Linear's default scale they are ~30x larger (tiny: RMS 0.58 vs 0.02), so
        # at a visual slot the attention output is drowned and the first token of every frame is predicted
        # from the visual token alone (identical for every frame: the LM never learned to read the history).
        embed_rms = _rms(text.get_input_embeddings().weight.detach())
        nn.init.normal_(self.lm_visual_proj[1].weight, std=embed_rms / math.sqrt(d))
        nn.init.zeros_(self.lm_visual_proj[1].bias)
        # Learned log-temperature of the transcript logits (0 = the LM head as is). The LM head is frozen
        # and tied to the embeddings: a random-init tower (backbone=tiny) has logits of |x| < ~1 that LoRA
        # alone can barely sharpen; a pretrained Qwen head starts calibrated at scale 1.
        self.transcript_logit_scale = LogitScale()

    # -- pieces shared by the teacher-forced and the streaming paths ----------------------------

    def _ids(self) -> tuple[int, int]:
        if self.eof_token_id is None or self.pad_token_id is None:
            raise ValueError("model=parallel needs the tokenizer's eof_token_id and pad_token_id (build_model(cfg, tokenizer))")
        return int(self.eof_token_id), int(self.pad_token_id)

    def lm_visual_tokens(self, tokens: torch.Tensor, motion: torch.Tensor | float) -> torch.Tensor:
        """Frame tokens with their xy embedding [B, T, N, Dd] and the frames' motion summary [B, T, Dd]
        -> v tokens per frame in LM width [B, T, v, Dt].

        The motion summary (the change into frame t and into t+1) is what tells a narrated frame from
        a silent one: narration is spoken while something happens. Without it the LM has to diff frames
        through attention, and the tiny one never learned to (p(eof) was the base rate on every frame).
        """
        B, T, N, D = tokens.shape
        flat = tokens.reshape(B * T, N, D)
        pooled = self.lm_pool(self.lm_query(B * T).to(flat.dtype), flat, flat, need_weights=False)[0]
        if torch.is_tensor(motion):
            pooled = pooled + motion.reshape(B * T, 1, D).to(pooled.dtype)
        out = self.lm_visual_proj(pooled).reshape(B, T, -1, self.text.config.hidden_size)
        return out.to(self.text.get_input_embeddings().weight.dtype)

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text.get_input_embeddings()(ids)

    def _lm(self, embeds, valid, positions, cache=None) -> torch.Tensor:
        out = self.text.model(inputs_embeds=embeds, attention_mask=valid.long(), position_ids=positions,
                              cache=cache, use_cache=cache is not None)
        return out.last_hidden_state

    @staticmethod
    def _prompt_valid(prompt_mask: torch.Tensor) -> torch.Tensor:
        # An empty prompt attends to its pad tokens (as text_encoder.prompt_features does), so no row of
        # the causal mask is ever empty; both paths use this same rule.
        mask = prompt_mask.bool()
        return mask | ~mask.any(dim=1, keepdim=True)

    def interleave(self, prompt_ids, prompt_mask, lm_visual, transcript_ids, transcript_mask) -> Interleaved:
        """The teacher-forced sequence of a batch; lm_visual [B, T, v, Dt], transcript_* [B, T, S]."""
        eof, pad = self._ids()
        B, T, v, _ = lm_visual.shape
        S = transcript_ids.shape[2]
        lengths = transcript_mask.sum(-1)  # [B, T]
        slot = torch.arange(S + 1, device=lengths.device)
        if not torch.equal(transcript_mask.bool(), slot[:S] < lengths.unsqueeze(-1)):
            raise ValueError("batch['transcript_mask'] must be right-padded (True on a prefix of each frame's slots)")
        ids = torch.cat([transcript_ids, transcript_ids.new_full((B, T, 1), pad)], dim=-1)
        text = torch.where(slot < lengths.unsqueeze(-1), ids, torch.full_like(ids, pad))
        text = torch.where(slot == lengths.unsqueeze(-1), torch.full_like(text, eof), text)  # [B, T, S+1]
        text_valid = slot <= lengths.unsqueeze(-1)
        blocks = torch.cat([lm_visual, self._embed(text)], dim=2).flatten(1, 2)
        block_valid = torch.cat([text_valid.new_ones(B, T, v), text_valid], dim=2).flatten(1, 2)
        embeds = torch.cat([self._embed(prompt_ids), blocks], dim=1)
        valid = torch.cat([self._prompt_valid(prompt_mask), block_valid], dim=1)
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        return Interleaved(embeds, valid, positions, torch.where(text_valid, text, IGNORE_INDEX))

    def transcript_scaled(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM hidden states [..., Dt] times the logit temperature: the LM head has no bias, so its logits of
        these are the temperature-scaled logits, without a second vocab-wide tensor for the scaling."""
        return self.transcript_logit_scale(hidden)

    def transcript_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM hidden states [..., Dt] -> next-token logits [..., vocab] (the Qwen LM head, temperature-scaled)."""
        return self.text.lm_head(self.transcript_scaled(hidden))

    def _heads(self, x: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """All heads from the shared frame features x [..., Dd] (+ the frame's tokens for click)."""
        return {
            "action_logits": self.action_head(x),
            "key_logits": self.key_head(x),
            "modifier_logits": self.modifier_head(x),
            "click_logits": self.click_logits(x, tokens),
        }

    # -- teacher-forced ---------------------------------------------------------------------------

    def encode(self, batch: Mapping[str, torch.Tensor]) -> Features:
        if "transcript_ids" not in batch:
            raise KeyError("model=parallel encodes with teacher forcing and needs batch['transcript_ids'] / "
                           "['transcript_mask'] (data/README.md §3); for inference without text use stream()")
        visual, token_xy, token_cell, visible = self.encode_visual(batch["pixels"])
        self.check_frames(visual.shape[1])
        tokens = visual + self.token_pos(token_xy)
        lm_visual = self.lm_visual_tokens(tokens, self.motion_summary(tokens))
        seq = self.interleave(batch["prompt_ids"], batch["prompt_mask"], lm_visual,
                              batch["transcript_ids"], batch["transcript_mask"])
        hidden = self._lm(seq.embeds, seq.valid, seq.positions)
        B, T, v = lm_visual.shape[:3]
        L, S1 = batch["prompt_ids"].shape[1], seq.targets.shape[2]
        prompt_mask = batch["prompt_mask"].bool()
        prompt = self._prompt_features(hidden[:, :L], prompt_mask)
        blocks = hidden[:, L:].reshape(B, T, v + S1, -1)
        return Features(
            visual_tokens=visual, token_xy=token_xy, token_cell=token_cell, prompt_features=prompt,
            prompt_mask=prompt_mask, visible_indices=visible,
            lm_frame_hidden=blocks[:, :, :v],
            lm_text_hidden=blocks[:, :, v - 1:v - 1 + S1],  # last visual slot predicts text token 0 (or the eof)
            transcript_targets=seq.targets,
        )

    def _prompt_features(self, hidden: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        hidden = hidden * prompt_mask.unsqueeze(-1).to(hidden.dtype)
        return self.prompt_proj(hidden.to(self.prompt_proj[1].weight.dtype))

    def decode(self, features: Features) -> Outputs:
        if features.lm_text_hidden is None:
            raise ValueError("model=parallel decodes Features from its own encode() (they carry the LM pass)")
        tokens = features.visual_tokens + self.token_pos(features.token_xy)
        x = self.frame_trunk(tokens, features.prompt_features, features.prompt_mask)
        return Outputs(
            **self._heads(x, tokens),
            token_xy=features.token_xy,
            token_cell=features.token_cell,
            frame_features=x,
            transcript_hidden=self.transcript_scaled(features.lm_text_hidden),
            transcript_targets=features.transcript_targets,
            transcript_head=self.text.lm_head,
        )

    # -- streaming --------------------------------------------------------------------------------

    @torch.no_grad()
    def stream(
        self,
        clip_pixels: torch.Tensor | Iterable[torch.Tensor],
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor | None = None,
        *,
        use_cache: bool = True,
        max_text_tokens: int | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        forced_ids: torch.Tensor | None = None,
        forced_mask: torch.Tensor | None = None,
        early_stop: bool = True,
    ) -> Iterator[FrameStep]:
        """Per frame, as frames arrive: the heads' predictions and the generated transcript.

        Frame t is handled when frame t+1 arrives (the last one when the source ends): its labels and
        narration describe the interval [t, t+1), whose effect first shows in frame t+1 (the motion
        summary that the heads and the LM's visual tokens read). One frame of latency, nothing recomputed.

        clip_pixels: [B, T, 3, H, W], or any iterable of frames [B, 3, H, W] (a live source).
        prompt_ids / prompt_mask: [B, L] right-padded (mask None = all real).
        use_cache: True keeps one KV cache across frames (prompt and history are never recomputed);
          False is the naive reference that re-runs the LM over the whole sequence at every step.
        Greedy by default. With `model.eof_threshold` set, a frame stays silent when p(eof) >= it at the
          frame's first token, otherwise the most likely other token starts its text (null: plain argmax
          over every token; eof then wins whenever it beats each single token, which silences frames where
          speaking is likely but the first word is uncertain).
        do_sample draws from softmax(logits / temperature), restricted to the top_k tokens if set, with
          `generator` for reproducible draws.
        forced_ids / forced_mask [B, T, S]: score these transcripts instead of generating (teacher
          forcing through the same incremental path); `token_logprobs` then scores them.
        early_stop: end a frame's text loop once every clip has its eof. False runs max_text_tokens + 1
          steps every frame, so every process of a ZeRO-3 run does the same number of forwards.
        Clips whose text ended earlier feed pad tokens that are masked out of attention and
          positions, so each clip's result does not depend on the others in the batch.
        """
        if self.config.clip_encoding != "frames":
            raise ValueError("stream() needs model.clip_encoding=frames: with `video`, frame t's encoder tokens "
                             "attend to later frames, which have not arrived yet")
        if not self.config.temporal_causal:
            raise ValueError("stream() needs model.temporal_causal=true: otherwise frame t's heads read later frames")
        eof, pad = self._ids()
        limit = int(self.config.max_text_tokens if max_text_tokens is None else max_text_tokens)
        prompt_mask = torch.ones_like(prompt_ids, dtype=torch.bool) if prompt_mask is None else prompt_mask.bool()
        frames = clip_pixels.unbind(1) if torch.is_tensor(clip_pixels) else clip_pixels

        lm = _LMState(self, use_cache)
        valid = self._prompt_valid(prompt_mask)
        hidden = lm.step(self._embed(prompt_ids), valid)
        prompt = self._prompt_features(hidden, prompt_mask)
        history: list[torch.Tensor] = []  # frame tokens [B, 1, N, D] of every frame so far (the causal trunk reads all)
        pending: tuple[int, torch.Tensor, tuple[float, float]] | None = None  # the newest frame, waiting for the next
        previous = None
        gen = (limit, eof, pad, do_sample, temperature, top_k, generator, early_stop, forced_ids, forced_mask)
        for t, frame in enumerate(frames):
            self.check_frames(t + 1)
            # visible_tokens picks patches by change against the previous frame: give it that frame too.
            pair = frame.unsqueeze(1) if previous is None or self.config.visible_tokens is None else \
                torch.stack([previous, frame], dim=1)
            visual, token_xy, token_cell, _ = self.encode_visual(pair)
            previous = frame
            history.append(visual[:, -1:] + self.token_pos(token_xy[:, -1:]))  # [B, 1, N, D]
            if pending is not None:  # frame t-1 can read its change into frame t now
                yield self._frame_step(lm, pending, history, prompt, prompt_mask, gen, last=False)
            pending = (t, token_xy[:, -1], token_cell)
        if pending is not None:  # the source ended: the last frame has no next one (zero change, as in training)
            yield self._frame_step(lm, pending, history, prompt, prompt_mask, gen, last=True)

    def _frame_step(self, lm: _LMState, pending, history: list[torch.Tensor], prompt, prompt_mask, gen,
                    last: bool) -> FrameStep:
        """Everything for the pending frame t: history ends with it (last) or with frame t+1."""
        t, token_xy, token_cell = pending
        limit, eof, pad, do_sample, temperature, top_k, generator, early_stop, forced_ids, forced_mask = gen
        tokens = torch.cat(history, dim=1)
        i = tokens.shape[1] - (1 if last else 2)  # frame t's index in `tokens`
        lo = max(0, i - 1)
        motion = self.motion_summary(tokens[:, lo:i + 2])  # frames t-1, t, t+1 are all it reads
        motion = motion[:, i - lo:i - lo + 1] if torch.is_tensor(motion) else motion
        lm_visual = self.lm_visual_tokens(tokens[:, i:i + 1], motion)[:, 0]  # [B, v, Dt]
        B, v = lm_visual.shape[:2]
        if t > 0:  # close the previous frame's text with its eof, then this frame's visual tokens
            lm_visual = torch.cat([self._embed(torch.full((B, 1), eof, device=lm_visual.device)), lm_visual], dim=1)
        hidden = lm.step(lm_visual, torch.ones(B, lm_visual.shape[1], dtype=torch.bool, device=lm_visual.device))

        x = self.frame_trunk(tokens, prompt, prompt_mask)[:, i:i + 1]  # causal: frames <= t (+ motion into t+1)
        heads = {k: val[:, 0] for k, val in self._heads(x, tokens[:, i:i + 1]).items()}

        forced = None if forced_ids is None else (forced_ids[:, t], forced_mask[:, t].sum(-1))
        ids, logprobs = self._generate_frame(lm, hidden[:, -1], limit, eof, pad, forced, do_sample, temperature,
                                             top_k, generator, early_stop, self.config.eof_threshold)
        texts = [self.tokenizer.decode(i, skip_special_tokens=True) for i in ids] if self.tokenizer else None
        return FrameStep(t=t, **heads, click_xy=decode_click_xy(heads["click_logits"], token_xy, token_cell),
                         token_ids=ids, texts=texts, token_logprobs=logprobs)

    def _generate_frame(self, lm, last_hidden, limit, eof, pad, forced, do_sample, temperature, top_k,
                        generator, early_stop, eof_threshold):
        """One frame's text for every clip; the eof is not fed here (the next frame's step feeds it).

        Tokens and log-probs stay on the device until the frame ends (one copy to the host per frame);
        the only per-token sync is the early-stop check (none with early_stop=False).
        """
        B = last_hidden.shape[0]
        device = last_hidden.device
        toks, tok_logps, emitted = [], [], []  # per step [B]: token, its log-prob, whether the clip was still going
        done = torch.zeros(B, dtype=torch.bool, device=device)
        eofs = torch.full((B,), eof, device=device)
        logits = self.transcript_logits(last_hidden).float()  # [B, V]
        for step in range(limit + 1):
            logp = F.log_softmax(logits, dim=-1)
            if step == limit:  # the text is as long as training ever saw: close it
                tok = eofs
            elif forced is not None:
                f_ids, f_len = forced
                tok = torch.where(step < f_len, f_ids[:, step], eofs) if step < f_ids.shape[1] else eofs
            else:
                # The eof rule decides speak vs silent (the first token) only; inside a text plain argmax
                # ends it (the continuation is one likely token, not mass spread over many words).
                tok = pick_token(logits, eof, do_sample, temperature, top_k, generator,
                                 eof_threshold if step == 0 else None)
            toks.append(tok)
            tok_logps.append(logp.gather(1, tok.unsqueeze(1))[:, 0])
            emitted.append(~done)
            done = done | (tok == eof)
            if step == limit or (early_stop and bool(done.all())):
                break
            feed = torch.where(done, torch.full_like(tok, pad), tok)
            hidden = lm.step(self._embed(feed.unsqueeze(1)), ~done.unsqueeze(1))
            logits = self.transcript_logits(hidden[:, -1]).float()
        tok, tok_logp, live = (torch.stack(x, dim=1).tolist() for x in (toks, tok_logps, emitted))  # [B, steps]
        ids = [[i for i, on in zip(tok[b], live[b]) if on and i != eof] for b in range(B)]
        logprobs = [[lp for lp, on in zip(tok_logp[b], live[b]) if on] for b in range(B)]
        return ids, logprobs

    @torch.no_grad()
    def transcribe(self, batch: Mapping[str, torch.Tensor], **stream_kwargs: Any) -> list[list[str]]:
        """Greedy transcripts of a batch of clips: [clip][frame] -> text (streaming path)."""
        if self.tokenizer is None:
            raise ValueError("transcribe() needs the tokenizer: build the model with build_model(cfg, tokenizer)")
        B, T = batch["pixels"].shape[:2]
        out: list[list[str]] = [[] for _ in range(B)]
        for step in self.stream(batch["pixels"], batch["prompt_ids"], batch["prompt_mask"], **stream_kwargs):
            for b in range(B):
                out[b].append(step.texts[b])
        return out

    def reference_transcripts(self, batch: Mapping[str, torch.Tensor]) -> list[list[str]]:
        """The batch's own per-frame transcripts decoded back to text: [clip][frame] -> text."""
        ids, mask = batch["transcript_ids"], batch["transcript_mask"].bool()
        return [[self.tokenizer.decode(ids[b, t][mask[b, t]].tolist(), skip_special_tokens=True)
                 for t in range(ids.shape[1])] for b in range(ids.shape[0])]


class LogitScale(nn.Module):
    """x * exp(s), s learned from 0 (the transcript's logit temperature, applied to the LM head's input). A module
    (ZeRO-3 gathers it around forward) holding shape [1] (DeepSpeed's bf16 broadcast of a 0-dim tensor fails on gloo)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.exp().to(x.dtype)


def _rms(weight: torch.Tensor, rows: int = 4096) -> float:
    """Root mean square in fp32, a block of rows at a time (no fp32 copy of a 151,936-row embedding)."""
    if weight.is_meta:  # built to be counted (empty_weights): there are no values, any scale will do
        return 1.0
    total = sum(float(block.float().pow(2).sum()) for block in weight.split(rows))
    return math.sqrt(total / weight.numel())


def pick_token(logits: torch.Tensor, eof: int, do_sample: bool = False, temperature: float = 1.0,
               top_k: int | None = None, generator: torch.Generator | None = None,
               eof_threshold: float | None = None) -> torch.Tensor:
    """Next token per row of logits [B, V] (see `stream` for the greedy eof rule and sampling)."""
    if not do_sample:
        if eof_threshold is None:
            return logits.argmax(dim=-1)
        # Two decisions, each by its most likely outcome: end the frame or not (p(eof) against the rest
        # together), then which token. The eof CE trains exactly that first decision.
        p_eof = torch.softmax(logits.float(), dim=-1)[:, eof]
        other = logits.clone()
        other[:, eof] = float("-inf")
        other = other.argmax(dim=-1)
        return torch.where(p_eof >= eof_threshold, torch.full_like(other, eof), other)
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 (use do_sample=False for greedy)")
    logits = logits / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = logits.topk(int(top_k), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


class _LMState:
    """The LM context of a stream: a KV cache, or (naive) the whole sequence re-run at every step.

    Tracks, per clip, which slots are real (`valid`, the attention mask over everything fed so far)
    and the next position id (real tokens only), so a pad slot fed for a finished clip changes nothing.
    """

    def __init__(self, model: ParallelHeadsDecoder, use_cache: bool) -> None:
        self.model = model
        self.cache = DynamicCache(config=model.text.config) if use_cache else None
        self.embeds: torch.Tensor | None = None  # naive: every embedding fed so far
        self.positions: torch.Tensor | None = None  # naive: their position ids
        self.valid: torch.Tensor | None = None
        self.next_pos: torch.Tensor | None = None

    def step(self, embeds: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Feed embeds [B, n, Dt] (valid [B, n]); hidden states [B, n, Dt] of those slots."""
        B, n = valid.shape
        start = torch.zeros(B, 1, dtype=torch.long, device=valid.device) if self.next_pos is None else self.next_pos
        positions = start + (valid.long().cumsum(1) - 1).clamp(min=0)
        self.next_pos = start + valid.long().sum(1, keepdim=True)
        self.valid = valid if self.valid is None else torch.cat([self.valid, valid], dim=1)
        if self.cache is not None:
            return self.model._lm(embeds, self.valid, positions, cache=self.cache)
        self.embeds = embeds if self.embeds is None else torch.cat([self.embeds, embeds], dim=1)
        self.positions = positions if self.positions is None else torch.cat([self.positions, positions], dim=1)
        return self.model._lm(self.embeds, self.valid, self.positions)[:, -n:]
