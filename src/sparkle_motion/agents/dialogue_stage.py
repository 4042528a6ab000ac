"""The dialogue_audio stage: each line voiced by tts_chatterbox, fitted to its slot, stitched into one timeline.

Functions of the run rather than methods, so the run's module stays about the
order of things and this one about speech.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from function_tools.tts_chatterbox.models import TtsChatterboxRequest, TtsVoice
from sparkle_motion.agents.production_steps import StageFailed, StepOutcome, tool_payload
from sparkle_motion.errors import SparkleError
from sparkle_motion.media import read_wav, write_wav

if TYPE_CHECKING:
    from sparkle_motion.agents.production_run import ProductionRun

TIMELINE_SAMPLE_RATE = 24_000
MAX_RATE_GAIN = 1.35  # how much faster a line may be re-voiced to fit before the next line
MAX_VOICE_RATE = 4.0  # the plan's VoiceProfile bound
FIT_ATTEMPTS = 3


def dialogue_audio(run: "ProductionRun") -> dict[str, Any]:
    run.begin_stage("dialogue_audio")
    characters = {c.id: c for c in run.plan.characters}
    seed = int(run.plan.metadata.seed or 0)
    dialogue = [(i, e) for i, e in enumerate(run.plan.dialogue_timeline) if e.type == "dialogue"]
    lines = []
    for position, (index, entry) in enumerate(dialogue):
        character = characters[entry.character_id]
        with run.building("tts_chatterbox", "dialogue_audio"):
            voice = TtsVoice(character_id=character.id, character_name=character.name,
                             **character.voice_profile.model_dump(exclude_none=True, exclude={"reference_audio_id"}))
            clip = reference_voice(run, character)
            request = TtsChatterboxRequest(text=entry.text, voice=voice, seed=seed + index,
                                           sample_rate=TIMELINE_SAMPLE_RATE,
                                           **({"reference_audio_uri": clip} if clip else {}))
        # Speech may run into the following silence, up to the next line (or the end).
        next_start = dialogue[position + 1][1].start_time_sec if position + 1 < len(dialogue) else run.plan.runtime_s
        room_s = next_start - entry.start_time_sec
        out = run.step("dialogue_audio", f"line_{index:03d}", "tts_chatterbox", tool_payload(request),
                        lambda request=request: speak(run, request))
        if out["duration_s"] > room_s:
            out = speak_faster(run, index, request, out["duration_s"], room_s)
        lines.append({"index": index, "character_id": character.id, "character_name": character.name,
                      "text": entry.text, "start_s": entry.start_time_sec, "slot_s": entry.duration_sec, **out})
    stitch_inputs = {"lines": [(ln["index"], ln["uri"], ln["start_s"]) for ln in lines], "runtime": run.plan.runtime_s}
    out = run.step("dialogue_audio", "timeline", None, stitch_inputs, lambda: stitch_timeline(run, lines))
    run.results["dialogue_audio"] = out
    return out

def reference_voice(run: "ProductionRun", character: Any) -> str | None:
    """The URI of the character's voice clip (``voice_profile.reference_audio_id``); an unknown id fails the stage."""
    clip_id = character.voice_profile.reference_audio_id
    if clip_id is None:
        return None
    field = f"characters[{run.plan.characters.index(character)}].voice_profile.reference_audio_id"
    try:
        return run.store.get(clip_id, field=field).uri
    except SparkleError as exc:
        raise StageFailed(f"voice clip of {character.name!r}: {exc.message}",
                          context={"stage": "dialogue_audio", "field": field}) from exc


def speak(run: "ProductionRun", request: TtsChatterboxRequest) -> StepOutcome:
    response = run.invoke("tts_chatterbox", request, stage="dialogue_audio")
    words = [{k: w[k] for k in ("word", "start_s", "end_s")} for w in response.get("words") or []]
    return StepOutcome({"uri": response["audio_uri"], "duration_s": response["duration_s"],
                        "voice_id": response.get("voice_id"), "word_timings": words,
                        "rate": request.voice.rate},
                       [a["artifact_id"] for a in response["artifacts"]])

def speak_faster(run: "ProductionRun", index: int, request: TtsChatterboxRequest, duration_s: float,
                  room_s: float) -> dict[str, Any]:
    """Re-voice a line that would overlap the next one at a faster rate, within MAX_RATE_GAIN.

    A plan's slots are estimates; a voice that speaks a little slower than the
    planner assumed should not fail the film. eSpeak's pauses do not scale with
    the rate, so the gain is refined over a few tries. Beyond the gain the
    stitch fails with the line named, as before.
    """
    base_rate = float(request.voice.rate or 1.0)
    gain, out = 1.0, {"duration_s": duration_s}
    for attempt in range(1, FIT_ATTEMPTS + 1):
        gain = min(MAX_RATE_GAIN, gain * out["duration_s"] / room_s * 1.05)
        voice = request.voice.model_copy(update={"rate": round(min(MAX_VOICE_RATE, base_rate * gain), 3)})
        faster = request.model_copy(update={"voice": voice})
        run.registry.log(run.run_id, "info", f"dialogue_timeline[{index}] speaks {out['duration_s']:.2f} s in a "
                          f"{room_s:.2f} s window; re-voicing at rate {voice.rate}")
        out = run.step("dialogue_audio", f"line_{index:03d}.fit{attempt}", "tts_chatterbox", tool_payload(faster),
                        lambda faster=faster: speak(run, faster))
        if out["duration_s"] <= room_s or gain >= MAX_RATE_GAIN:
            break
    return out

def stitch_timeline(run: "ProductionRun", lines: list[dict[str, Any]]) -> StepOutcome:
    sr = TIMELINE_SAMPLE_RATE
    total = round(run.plan.runtime_s * sr)
    track = np.zeros(total, dtype=np.float32)
    report = []
    starts = [round(ln["start_s"] * sr) for ln in lines]
    for i, line in enumerate(lines):
        samples, line_sr = read_wav(run.store.path_for(line["uri"]))
        if line_sr != sr:
            raise StageFailed(f"dialogue_timeline[{line['index']}]: TTS returned {line_sr} Hz, expected {sr} Hz",
                              context={"stage": "dialogue_audio"})
        start = starts[i]
        limit = starts[i + 1] if i + 1 < len(lines) else total
        end = start + len(samples)
        if end > limit:
            what = "the next line starts" if i + 1 < len(lines) else "the film ends"
            raise StageFailed(
                f"dialogue_timeline[{line['index']}] ({line['character_name']}: {line['text'][:40]!r}) needs "
                f"{len(samples) / sr:.2f} s of speech but {what} {(limit - start) / sr:.2f} s after it starts; "
                f"shorten the line or lengthen its shot",
                context={"stage": "dialogue_audio", "line": line["index"]},
            )
        track[start:end] = samples
        slot_end = start + round(line["slot_s"] * sr)
        report.append({
            "index": line["index"], "character_id": line["character_id"], "text": line["text"],
            "start_planned_s": line["start_s"], "slot_s": line["slot_s"],
            "start_actual_s": start / sr, "end_actual_s": end / sr, "raw_duration_s": len(samples) / sr,
            "padding_s": max(0, slot_end - end) / sr, "overrun_s": max(0, end - slot_end) / sr, "trimmed_s": 0.0,
            "audio_uri": line["uri"], "rate": line.get("rate"),
            "word_timings": [{**w, "start_s": w["start_s"] + start / sr, "end_s": w["end_s"] + start / sr}
                             for w in line.get("word_timings") or [] if "start_s" in w and "end_s" in w],
        })
    staging = run.store.staging_dir() / f"{run.run_id}_tts_timeline.wav"
    write_wav(staging, track, sr)
    wav = run.store.put(run.run_id, "dialogue_audio", "tts_timeline", staging, "audio/wav",
                         metadata={"tool": "production_agent", "lines": len(lines)},
                         media={"duration_s": total / sr, "sample_rate": sr}, move=True)
    report_manifest = run.store.put_json(run.run_id, "dialogue_audio", "dialogue_timeline_audio",
                                          {"sample_rate": sr, "runtime_s": total / sr, "lines": report},
                                          metadata={"tool": "production_agent"})
    return StepOutcome({"timeline_uri": wav.uri, "report_uri": report_manifest.uri, "lines": report},
                       [wav.artifact_id, report_manifest.artifact_id])
