"""The transcript decoder of `model=parallel`: an autoregressive per-frame narration through the Qwen LM head.

It is the SAME LoRA-tuned `Qwen3ForCausalLM` that reads the prompt (one copy, the decoder's `text` tower,
passed in as `lm`); this part adds only what turns frames into LM inputs. The LM reads, causally:

    [prompt tokens, visual tokens of frame 0 (v of them), transcript tokens of frame 0, eof,
     visual tokens of frame 1, transcript tokens of frame 1, eof, ...]

so frame t's text is predicted from its visual tokens, the prompt and the texts of frames 0..t-1.
The v visual tokens of a frame are learned queries attending over its encoder tokens, plus the frame's
motion summary (its change from frame t-1 and into frame t+1: narration on frame t, like its action label,
is what happens in [t, t+1)), projected to the LM width (`pool` + `visual_proj`: with the text LoRA, what
the transcript trains).

Teacher-forced (training, `teacher_forced`): ONE LM pass over the whole clip's interleaved sequence. Every
frame block has a fixed layout, v visual slots + S+1 text slots (S = longest text in the batch): the text,
its eof, then pad slots. Pad slots (and prompt padding) are masked out as keys and skipped by the position
ids, so each real token sees exactly what it would see in the streaming path. From that pass: the prompt's
hidden states (the decoder's prompt features), and the hidden states at the S+1 slots that predict each
frame's tokens + eof. (The heads never read the LM: in the teacher-forced pass its visual slots attend to
the reference narration of earlier frames, which inference does not have.)

Streaming (`LMContext`, `generate_frame`; driven by models/streaming.py): one KV cache across frames, or the
naive reference that re-runs the LM over the whole sequence so far at every step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from action_decoder.data.vocab import IGNORE_INDEX

from .layers import LearnedTokens, LogitScale


@dataclass(frozen=True)
class Generation:
    """How a frame's text is generated (the `stream` arguments of the same names; see models/streaming.py)."""

    max_text_tokens: int = 16  # cap per frame before a forced eof
    eof_threshold: float | None = None  # greedy speak/silent rule at a frame's first token; None = plain argmax
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    generator: torch.Generator | None = None
    early_stop: bool = True  # False: max_text_tokens + 1 steps every frame (same forwards on every process)

    def __post_init__(self) -> None:
        if self.eof_threshold is not None and not 0.0 < float(self.eof_threshold) < 1.0:
            raise ValueError(f"model.eof_threshold={self.eof_threshold}: use null (plain argmax) or a probability in (0, 1)")
        if int(self.max_text_tokens) < 0:
            raise ValueError(f"model.max_text_tokens={self.max_text_tokens} must be >= 0")


@dataclass(frozen=True)
class TranscriptConfig:
    """The transcript knobs of `cfg.model` (conf/model/parallel.yaml documents each)."""

    lm_visual_tokens: int = 4
    max_text_tokens: int = 16
    eof_threshold: float | None = None
    history_dropout: float = 0.0

    @classmethod
    def from_cfg(cls, model_cfg: Mapping[str, Any]) -> "TranscriptConfig":
        return cls(**{f.name: model_cfg[f.name] for f in fields(cls) if f.name in model_cfg})

    def __post_init__(self) -> None:
        if int(self.lm_visual_tokens) < 1:
            raise ValueError(f"model.lm_visual_tokens={self.lm_visual_tokens} must be >= 1")
        Generation(int(self.max_text_tokens), self.eof_threshold)  # its checks name the knobs
        if not 0.0 <= float(self.history_dropout) < 1.0:
            raise ValueError(f"model.history_dropout={self.history_dropout} must be in [0, 1)")


@dataclass
class Interleaved:
    """The teacher-forced LM input of a batch of clips (see the module docstring for the layout)."""

    embeds: torch.Tensor  # [B, L + T*(v+S+1), Dt]
    valid: torch.Tensor  # [B, L + T*(v+S+1)] bool: real tokens (attended to, counted in positions)
    positions: torch.Tensor  # [B, L + T*(v+S+1)] position ids: running count of real tokens
    targets: torch.Tensor  # [B, T, S+1] token predicted by each frame's slots v-1 .. v+S-1; -100 past the eof


@dataclass
class TeacherForced:
    """What the one teacher-forced LM pass gives the decoder."""

    prompt_hidden: torch.Tensor  # [B, L, Dt] LM hidden states of the prompt, pad rows zeroed
    frame_hidden: torch.Tensor  # [B, T, v, Dt] at each frame's v visual tokens
    text_hidden: torch.Tensor  # [B, T, S+1, Dt] at the slots that predict frame t's tokens + eof
    targets: torch.Tensor  # [B, T, S+1] the tokens they predict; -100 past the eof


class TranscriptDecoder(nn.Module):
    def __init__(self, d: int, num_heads: int, dropout: float, lm: nn.Module, config: TranscriptConfig,
                 tokenizer: Any | None) -> None:
        super().__init__()
        dt = int(lm.config.hidden_size)
        self.config = config
        self.tokenizer = tokenizer  # decodes generated ids (not a module)
        self.eof_token_id = getattr(tokenizer, "eof_token_id", None)
        self.pad_token_id = getattr(tokenizer, "pad_token_id", None)
        self.generation = Generation(int(config.max_text_tokens), config.eof_threshold)  # the defaults of `stream`
        self.query = LearnedTokens(int(config.lm_visual_tokens), d)
        self.pool = nn.MultiheadAttention(d, num_heads, dropout=dropout, batch_first=True)
        self.visual_proj = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, dt))
        # Visual tokens enter the LM's residual stream next to its token embeddings: start them at the
        # embeddings' scale. At nn.Linear's default scale they are ~30x larger (tiny: RMS 0.58 vs 0.02), so
        # at a visual slot the attention output is drowned and the first token of every frame is predicted
        # from the visual token alone (identical for every frame: the LM never learned to read the history).
        embed_rms = _rms(lm.get_input_embeddings().weight.detach())
        nn.init.normal_(self.visual_proj[1].weight, std=embed_rms / math.sqrt(d))
        nn.init.zeros_(self.visual_proj[1].bias)
        # Learned log-temperature of the transcript logits (0 = the LM head as is). The LM head is frozen
        # and tied to the embeddings: a random-init tower (backbone=tiny) has logits of |x| < ~1 that LoRA
        # alone can barely sharpen; a pretrained Qwen head starts calibrated at scale 1.
        self.logit_scale = LogitScale()

    # -- pieces shared by the teacher-forced and the streaming paths ----------------------------

    def ids(self) -> tuple[int, int]:
        """(eof, pad) token ids."""
        if self.eof_token_id is None or self.pad_token_id is None:
            raise ValueError("model=parallel needs the tokenizer's eof_token_id and pad_token_id (build_model(cfg, tokenizer))")
        return int(self.eof_token_id), int(self.pad_token_id)

    def visual_tokens(self, lm: nn.Module, tokens: torch.Tensor, motion: torch.Tensor | float) -> torch.Tensor:
        """Frame tokens with their xy embedding [B, T, N, Dd] and the frames' motion summary [B, T, Dd]
        -> v tokens per frame in LM width [B, T, v, Dt].

        The motion summary (the change into frame t and into t+1) is what tells a narrated frame from
        a silent one: narration is spoken while something happens. Without it the LM has to diff frames
        through attention, and the tiny one never learned to (p(eof) was the base rate on every frame).
        """
        B, T, N, D = tokens.shape
        flat = tokens.reshape(B * T, N, D)
        pooled = self.pool(self.query(B * T).to(flat.dtype), flat, flat, need_weights=False)[0]
        if torch.is_tensor(motion):
            pooled = pooled + motion.reshape(B * T, 1, D).to(pooled.dtype)
        out = self.visual_proj(pooled).reshape(B, T, -1, lm.config.hidden_size)
        return out.to(lm.get_input_embeddings().weight.dtype)

    @staticmethod
    def embed(lm: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        return lm.get_input_embeddings()(ids)

    @staticmethod
    def run_lm(lm: nn.Module, embeds, valid, positions, cache=None) -> torch.Tensor:
        out = lm.model(inputs_embeds=embeds, attention_mask=valid.long(), position_ids=positions,
                       cache=cache, use_cache=cache is not None)
        return out.last_hidden_state

    @staticmethod
    def prompt_valid(prompt_mask: torch.Tensor) -> torch.Tensor:
        # An empty prompt attends to its pad tokens (as text_encoder.prompt_features does), so no row of
        # the causal mask is ever empty; both paths use this same rule.
        mask = prompt_mask.bool()
        return mask | ~mask.any(dim=1, keepdim=True)

    @staticmethod
    def prompt_hidden(hidden: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        """The LM's hidden states at the prompt [B, L, Dt] with pad rows zeroed (as text_encoder.prompt_features)."""
        return hidden * prompt_mask.bool().unsqueeze(-1).to(hidden.dtype)

    def scaled(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM hidden states [..., Dt] times the logit temperature: the LM head has no bias, so its logits of
        these are the temperature-scaled logits, without a second vocab-wide tensor for the scaling."""
        return self.logit_scale(hidden)

    def logits(self, lm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """LM hidden states [..., Dt] -> next-token logits [..., vocab] (the Qwen LM head, temperature-scaled)."""
        return lm.lm_head(self.scaled(hidden))

    # -- teacher-forced ---------------------------------------------------------------------------

    def interleave(self, lm, prompt_ids, prompt_mask, lm_visual, transcript_ids, transcript_mask) -> Interleaved:
        """The teacher-forced sequence of a batch; lm_visual [B, T, v, Dt], transcript_* [B, T, S]."""
        eof, pad = self.ids()
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
        blocks = torch.cat([lm_visual, self.embed(lm, text)], dim=2).flatten(1, 2)
        block_valid = torch.cat([text_valid.new_ones(B, T, v), text_valid], dim=2).flatten(1, 2)
        embeds = torch.cat([self.embed(lm, prompt_ids), blocks], dim=1)
        valid = torch.cat([self.prompt_valid(prompt_mask), block_valid], dim=1)
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        return Interleaved(embeds, valid, positions, torch.where(text_valid, text, IGNORE_INDEX))

    def teacher_forced(self, lm: nn.Module, batch: Mapping[str, torch.Tensor], tokens: torch.Tensor,
                       motion: torch.Tensor | float) -> TeacherForced:
        """The one LM pass over the batch's interleaved sequence; tokens [B, T, N, Dd] with their xy embedding."""
        if "transcript_ids" not in batch:
            raise KeyError("model=parallel encodes with teacher forcing and needs batch['transcript_ids'] / "
                           "['transcript_mask'] (data/README.md §3); for inference without text use stream()")
        lm_visual = self.visual_tokens(lm, tokens, motion)
        transcript_mask, hidden_frames = batch["transcript_mask"], None
        if self.training and self.config.history_dropout > 0:
            transcript_mask, hidden_frames = self.drop_history(transcript_mask)
        seq = self.interleave(lm, batch["prompt_ids"], batch["prompt_mask"], lm_visual,
                              batch["transcript_ids"], transcript_mask)
        if hidden_frames is not None:  # a dropped frame reads as silent to later frames; it is not scored itself
            seq.targets = seq.targets.masked_fill(hidden_frames.unsqueeze(-1), IGNORE_INDEX)
        hidden = self.run_lm(lm, seq.embeds, seq.valid, seq.positions)
        B, T, v = lm_visual.shape[:3]
        L, S1 = batch["prompt_ids"].shape[1], seq.targets.shape[2]
        blocks = hidden[:, L:].reshape(B, T, v + S1, -1)
        return TeacherForced(
            prompt_hidden=self.prompt_hidden(hidden[:, :L], batch["prompt_mask"]),
            frame_hidden=blocks[:, :, :v],
            text_hidden=blocks[:, :, v - 1:v - 1 + S1],  # last visual slot predicts text token 0 (or the eof)
            targets=seq.targets,
        )

    def drop_history(self, transcript_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """model.history_dropout: each narrated frame, with that probability, is fed as a silent frame (its
        text removed: later frames see exactly the history a streamed frame that wrote nothing leaves) and
        drops out of the loss (it is not taught to be silent). Teacher forcing otherwise always shows the
        reference text of earlier frames, so a narration that continues over frames is learned as 'keep
        talking because the history is talking'; streamed, a frame that stayed silent then silences the
        rest of its sentence. Returns (transcript_mask, dropped frames [B, T])."""
        narrated = transcript_mask.any(-1)
        dropped = narrated & (torch.rand(narrated.shape, device=narrated.device) < self.config.history_dropout)
        return transcript_mask & ~dropped.unsqueeze(-1), dropped

    # -- streaming --------------------------------------------------------------------------------

    def generate_frame(self, lm: nn.Module, context: "LMContext", last_hidden: torch.Tensor, generation: Generation,
                       forced: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[list[list[int]], list[list[float]]]:
        """One frame's text for every clip: (token ids without the eof, log-prob of each emitted token then of
        the eof). The eof is not fed here (the next frame's step feeds it). forced: (ids [B, S], lengths [B])
        to score instead of generate.

        Tokens and log-probs stay on the device until the frame ends (one copy to the host per frame);
        the only per-token sync is the early-stop check (none with early_stop=False).
        """
        eof, pad = self.ids()
        limit = int(generation.max_text_tokens)
        B = last_hidden.shape[0]
        device = last_hidden.device
        toks, tok_logps, emitted = [], [], []  # per step [B]: token, its log-prob, whether the clip was still going
        done = torch.zeros(B, dtype=torch.bool, device=device)
        eofs = torch.full((B,), eof, device=device)
        logits = self.logits(lm, last_hidden).float()  # [B, V]
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
                tok = pick_token(logits, eof, generation.do_sample, generation.temperature, generation.top_k,
                                 generation.generator, generation.eof_threshold if step == 0 else None)
            toks.append(tok)
            tok_logps.append(logp.gather(1, tok.unsqueeze(1))[:, 0])
            emitted.append(~done)
            done = done | (tok == eof)
            if step == limit or (generation.early_stop and bool(done.all())):
                break
            feed = torch.where(done, torch.full_like(tok, pad), tok)
            hidden = context.step(self.embed(lm, feed.unsqueeze(1)), ~done.unsqueeze(1))
            logits = self.logits(lm, hidden[:, -1]).float()
        tok, tok_logp, live = (torch.stack(x, dim=1).tolist() for x in (toks, tok_logps, emitted))  # [B, steps]
        ids = [[i for i, on in zip(tok[b], live[b]) if on and i != eof] for b in range(B)]
        logprobs = [[lp for lp, on in zip(tok_logp[b], live[b]) if on] for b in range(B)]
        return ids, logprobs

    def texts(self, ids: list[list[int]]) -> list[str] | None:
        """Generated ids -> text per clip (None when the model has no tokenizer)."""
        return [self.tokenizer.decode(i, skip_special_tokens=True) for i in ids] if self.tokenizer else None


class LMContext:
    """The LM context of a stream: a KV cache, or (naive) the whole sequence re-run at every step.

    Tracks, per clip, which slots are real (`valid`, the attention mask over everything fed so far)
    and the next position id (real tokens only), so a pad slot fed for a finished clip changes nothing.
    """

    def __init__(self, lm: nn.Module, use_cache: bool) -> None:
        self.lm = lm
        self.cache = DynamicCache(config=lm.config) if use_cache else None
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
            return TranscriptDecoder.run_lm(self.lm, embeds, self.valid, positions, cache=self.cache)
        self.embeds = embeds if self.embeds is None else torch.cat([self.embeds, embeds], dim=1)
        self.positions = positions if self.positions is None else torch.cat([self.positions, positions], dim=1)
        return TranscriptDecoder.run_lm(self.lm, self.embeds, self.valid, self.positions)[:, -n:]


def pick_token(logits: torch.Tensor, eof: int, do_sample: bool = False, temperature: float = 1.0,
               top_k: int | None = None, generator: torch.Generator | None = None,
               eof_threshold: float | None = None) -> torch.Tensor:
    """Next token per row of logits [B, V] (see models/streaming.py for the greedy eof rule and sampling)."""
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


def _rms(weight: torch.Tensor, rows: int = 4096) -> float:
    """Root mean square in fp32, a block of rows at a time (no fp32 copy of a 151,936-row embedding)."""
    if weight.is_meta:  # built to be counted (empty_weights): there are no values, any scale will do
        return 1.0
    total = sum(float(block.float().pow(2).sum()) for block in weight.split(rows))
    return math.sqrt(total / weight.numel())
