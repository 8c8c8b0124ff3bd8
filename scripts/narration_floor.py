"""The CER floor the synthetic narration's random synonyms leave: an oracle that knows each cue's phrase
template, its arguments and its timing, but not which synonym the generator drew.

    python scripts/narration_floor.py split=test
    python scripts/narration_floor.py split=val data.prepared_dir=... data.recordings_dir=...

It replays the generator (`plan_recording`, same seed and index as the recording) while recording every
synonym draw, so each cue of `narration.srt` gets its list of alternatives ("move to {}", "go to {}", ...
formatted with the cue's own arguments; a cue with no draw behind it has only itself). Per cue the oracle
says the alternative with the lowest expected character errors over the alternatives (they are drawn
uniformly), its words spread over the frames by the labelling rule (data/README.md rule 14), and is scored
by the metrics eval.py uses (corpus CER over every frame of the split, silent ones included).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import jiwer

from action_decoder.config import load_config
from action_decoder.data.labels import FrameLabels, LabelStats, _spread_narration
from action_decoder.data.srt import Cue, read_srt
from action_decoder.evaluation.metrics import ActionMetrics
from action_decoder.recorders.synthetic import tasks
from action_decoder.recorders.synthetic.recorder import SyntheticConfig, plan_recording


def synonym_draws(index: int, cfg: SyntheticConfig) -> list[list[str]]:
    """Every list of strings the generator drew one from while planning recording `index`."""
    draws: list[list[str]] = []
    original = tasks._pick

    def recording_pick(rng, options):
        if all(isinstance(o, str) for o in options):
            draws.append(list(options))
        return original(rng, options)

    tasks._pick = recording_pick
    try:
        plan_recording(index, cfg)
    finally:
        tasks._pick = original
    return draws


def alternatives(text: str, draws: list[list[str]]) -> list[str]:
    """The phrasings the cue `text` could have had: the first draw with a template that makes exactly `text`
    (its `{}` filled with the same arguments), formatted; [text] when no draw made it."""
    for options in draws:
        for template in options:
            pattern = "^" + re.escape(template).replace(r"\{\}", "(.+?)") + "$"
            m = re.match(pattern, text)
            if m:
                # an alternative needing an argument this phrasing leaves out (scroll's "until {}") is skipped
                return [o.format(*m.groups()) for o in options if o.count("{}") <= len(m.groups())]
    return [text]


def spread(cues: list[Cue], num_frames: int, sample_fps: float) -> list[str]:
    labels = FrameLabels(num_frames, [], [], [], [], [], [])
    _spread_narration(cues, labels, sample_fps, LabelStats())
    return labels.transcript


def char_errors(ref: list[str], hyp: list[str]) -> int:
    pairs = [(r, h) for r, h in zip(ref, hyp) if r or h]
    if not pairs:
        return 0
    refs, hyps = zip(*pairs)
    out = jiwer.process_characters([r or " " for r in refs], [h or " " for h in hyps])
    return out.substitutions + out.deletions + out.insertions


def oracle_cue(cue: Cue, options: list[str], num_frames: int, sample_fps: float) -> Cue:
    """The alternative with the fewest expected character errors against a uniformly drawn one."""
    frames = {o: spread([Cue(cue.start, cue.end, o)], num_frames, sample_fps) for o in options}
    best = min(options, key=lambda c: sum(char_errors(frames[t], frames[c]) for t in options))
    return Cue(cue.start, cue.end, best)


def main(argv: list[str]) -> None:
    overrides = [a for a in argv if not a.startswith("split=")]
    split = next((a.split("=", 1)[1] for a in argv if a.startswith("split=")), "test")
    cfg = load_config(overrides)
    syn = SyntheticConfig.from_cfg(cfg.data.synthetic)
    fps = float(cfg.data.sample_fps)
    recordings = Path(cfg.data.recordings_dir)
    metrics = ActionMetrics(cfg.labels["actions"], cfg.labels["keys"], cfg.labels["modifiers"])
    n_cues = n_fixed = 0
    lines = (Path(cfg.data.prepared_dir) / f"{split}.jsonl").read_text().splitlines()
    for line in lines:
        ep = json.loads(line)
        folder = recordings / str(ep["id"])
        index = int(str(ep["id"]).rsplit("_", 1)[1])
        draws = synonym_draws(index, syn)
        cues = read_srt(folder / "narration.srt")
        said = []
        for cue in cues:
            options = alternatives(cue.text, draws)
            n_cues += 1
            n_fixed += len(options) == 1
            said.append(oracle_cue(cue, options, ep["num_frames"], fps))
        metrics.update_transcripts(spread(said, ep["num_frames"], fps), [t or "" for t in ep["transcript"]])
    m = metrics.compute()
    print(f"{split}: {len(lines)} episodes, {m['n_narrated_frames']} narrated frames, {n_cues} cues "
          f"({n_fixed} with one phrasing): oracle CER {m['transcript_cer']:.3f} WER {m['transcript_wer']:.3f} "
          f"exact match on narrated frames {m['transcript_exact_match']:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
