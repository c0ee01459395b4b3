"""mapo.data.clips: every clip source a user has, clear read errors, and the long-audio policy on a 45 s clip."""

from __future__ import annotations

import io
import logging
import math

import numpy as np
import pytest
import soundfile as sf

from mapo.data.clips import (
    MIN_AUDIO_SECONDS,
    AudioReadError,
    ClipReader,
    LongAudioCounter,
    apply_long_audio_policy,
    clip_seconds,
    read_clip,
)

SR = 16000


def _tone(seconds: float, sr: int = SR, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    mono = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono, 0.5 * mono], axis=1)


def _wav_bytes(wave: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def test_relative_path_is_resolved_and_matches_transformers_load_audio(tmp_path):
    from transformers.audio_utils import load_audio

    (tmp_path / "clips").mkdir()
    sf.write(tmp_path / "clips" / "a.wav", _tone(1.3, 22050, channels=2), 22050, subtype="FLOAT")
    wave = read_clip("clips/a.wav", SR, base_dir=str(tmp_path))
    ref = load_audio(str(tmp_path / "clips" / "a.wav"), sampling_rate=SR, backend="soundfile")
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert wave.shape == (math.ceil(round(1.3 * 22050) * SR / 22050),)
    np.testing.assert_array_equal(wave, ref)  # stereo downmix + soxr_hq, the same steps


def test_bytes_path_dict_decodes_the_bytes(tmp_path):
    src = _tone(0.8, 44100, freq=300.0)
    sf.write(tmp_path / "b.wav", src, 44100, subtype="FLOAT")
    from_path = read_clip(str(tmp_path / "b.wav"), SR)
    # The parquet / datasets.Audio(decode=False) layout: the bytes win, the path is only a name.
    from_bytes = read_clip({"bytes": _wav_bytes(src, 44100), "path": "nowhere/b.wav"}, SR)
    np.testing.assert_array_equal(from_bytes, from_path)
    # bytes None -> the path is read (relative to base_dir)
    np.testing.assert_array_equal(
        read_clip({"bytes": None, "path": "b.wav"}, SR, base_dir=str(tmp_path)), from_path
    )


def test_array_dict_is_resampled_and_bare_arrays_are_taken_at_the_target_rate():
    import soxr

    src = _tone(0.5, 8000)
    wave = read_clip({"array": src, "sampling_rate": 8000}, SR)
    assert wave.shape == (8000,)
    np.testing.assert_allclose(wave, soxr.resample(src, 8000, SR, quality="soxr_hq")[:8000], atol=1e-6)
    same = read_clip(_tone(0.5), SR)
    np.testing.assert_array_equal(same, _tone(0.5))


def _hub_parquet(path, rows):
    """A parquet file as the hub releases ship it (MMSU, MMAU-Pro): an ``audio`` struct column {bytes, path}
    declared as a ``datasets.Audio`` feature in the schema metadata. Written with pyarrow: ``datasets`` 5 cannot
    encode audio without torchcodec."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows)
    meta = {"info": {"features": {"id": {"dtype": "string", "_type": "Value"}, "audio": {"_type": "Audio"}}}}
    pq.write_table(table.replace_schema_metadata({"huggingface": json.dumps(meta)}), path)


def test_datasets_audio_column_from_parquet(tmp_path):
    import pyarrow.parquet as pq
    from datasets import Audio, Dataset

    clip = _tone(0.6, 24000)
    _hub_parquet(
        tmp_path / "test.parquet",
        [{"id": "x1", "audio": {"bytes": _wav_bytes(clip, 24000), "path": "x1.wav"}}],
    )
    # As a user reads a hub parquet release: datasets (decoding off) and plain pyarrow.
    back = Dataset.from_parquet(str(tmp_path / "test.parquet"))
    assert isinstance(back.features["audio"], Audio)
    value = back.cast_column("audio", Audio(decode=False))[0]["audio"]
    assert set(value) == {"bytes", "path"} and value["path"] == "x1.wav"
    row = pq.read_table(tmp_path / "test.parquet").to_pylist()[0]
    expected = read_clip({"array": clip, "sampling_rate": 24000}, SR)
    np.testing.assert_allclose(read_clip(value, SR), expected, atol=1e-6)
    np.testing.assert_allclose(read_clip(row["audio"], SR), expected, atol=1e-6)
    # A datasets.Audio column of file paths, decoding off: {"bytes": None, "path": ...}
    sf.write(tmp_path / "p.wav", clip, 24000, subtype="FLOAT")
    paths = Dataset.from_dict({"audio": [str(tmp_path / "p.wav")]}).cast_column("audio", Audio(decode=False))
    np.testing.assert_allclose(read_clip(paths[0]["audio"], SR), expected, atol=1e-6)


class _Samples:
    def __init__(self, data, sample_rate):
        self.data, self.sample_rate = data, sample_rate


class _DecoderLike:
    """The part of torchcodec's AudioDecoder API (datasets >= 4 decoded Audio values) that read_clip uses."""

    def __init__(self, wave, sr):
        import torch

        self._samples = _Samples(torch.from_numpy(np.stack([wave, wave])), sr)

    def get_all_samples(self):
        return self._samples


def test_decoded_datasets_audio_value_torchcodec_api():
    src = _tone(0.5, 8000)
    np.testing.assert_allclose(
        read_clip(_DecoderLike(src, 8000), SR),
        read_clip({"array": src, "sampling_rate": 8000}, SR),
        atol=1e-7,
    )


def test_missing_file_names_the_path_and_the_reason(tmp_path):
    with pytest.raises(
        AudioReadError, match=r"train.jsonl:3 id=r3: cannot use audio '.*gone.wav': file not found"
    ) as e:
        read_clip("gone.wav", SR, base_dir=str(tmp_path), where="train.jsonl:3 id=r3")
    assert isinstance(e.value, ValueError) and e.value.code == "missing"
    with pytest.raises(AudioReadError, match="no audio given") as e:
        read_clip(None, SR)
    assert e.value.code == "missing"


def test_corrupt_file_and_corrupt_bytes_are_undecodable(tmp_path):
    junk = np.random.default_rng(0).integers(0, 256, size=4096, dtype=np.uint8).tobytes()
    (tmp_path / "bad.wav").write_bytes(junk)
    with pytest.raises(AudioReadError, match=r"bad.wav'.*not decodable audio") as e:
        read_clip(str(tmp_path / "bad.wav"), SR)
    assert e.value.code == "undecodable"
    with pytest.raises(AudioReadError, match=r"bytes of 'bad.wav' \(4096 bytes\).*not decodable") as e:
        read_clip({"bytes": junk, "path": "bad.wav"}, SR)
    assert e.value.code == "undecodable"
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioReadError) as e:
        read_clip(str(tmp_path / "empty.wav"), SR)
    assert e.value.code == "undecodable"


@pytest.mark.parametrize("ms", [0, 10, 20])
def test_too_short_for_the_processor(tmp_path, ms):
    sf.write(tmp_path / "s.wav", np.zeros(int(SR * ms / 1000), np.float32), SR)
    with pytest.raises(AudioReadError) as e:
        read_clip(str(tmp_path / "s.wav"), SR)
    assert e.value.code == ("empty" if ms == 0 else "too_short")
    assert read_clip(_tone(MIN_AUDIO_SECONDS), SR).size == round(MIN_AUDIO_SECONDS * SR)


def _spec():
    from transformers import Qwen2AudioConfig

    from mapo.modality import resolve_modality

    return resolve_modality(Qwen2AudioConfig())


@pytest.fixture
def clip45(tmp_path):
    wave = _tone(45.0)
    sf.write(tmp_path / "long.wav", wave, SR, subtype="FLOAT")
    sf.write(tmp_path / "short.wav", _tone(2.0), SR, subtype="FLOAT")
    return tmp_path, wave


def test_45s_clip_policy_error(clip45):
    root, _ = clip45
    reader = ClipReader.for_spec(_spec(), policy="error", base_dir=str(root))
    assert (reader.sampling_rate, reader.max_seconds) == (16000, 30.0)
    assert len(reader.read("short.wav")) == 1
    with pytest.raises(AudioReadError, match=r"45.0 s but the processor keeps only the first 30 s") as e:
        reader.read("long.wav", where="row 7")
    assert e.value.code == "too_long" and "row 7" in str(e.value)
    assert (
        reader.counter.summary()
        == "long audio (> 30 s, policy error): 1 of 2 clips rejected (longest 45.0 s)"
    )


def test_45s_clip_policy_truncate_is_logged_and_counted(clip45, caplog):
    root, wave = clip45
    reader = ClipReader.for_spec(_spec(), policy="truncate", base_dir=str(root))
    with caplog.at_level(logging.WARNING, logger="mapo.data.clips"):
        parts = reader.read("long.wav")
    assert len(parts) == 1
    np.testing.assert_array_equal(parts[0], wave[: 30 * SR])
    assert "lasts 45.0 s > 30 s: kept the first 30 s" in caplog.text
    reader.read("short.wav")
    reader.read("long.wav")
    c = reader.counter
    assert (c.clips, c.affected, c.extra_segments) == (3, 2, 0)
    assert c.seconds_dropped == pytest.approx(30.0)
    assert c.summary() == (
        "long audio (> 30 s, policy truncate): 2 of 3 clips truncated to 30 s (longest 45.0 s, "
        "30.0 s of audio dropped)"
    )


def test_45s_clip_policy_chunk_keeps_every_sample(clip45):
    root, wave = clip45
    reader = ClipReader.for_spec(_spec(), policy="chunk", base_dir=str(root))
    parts = reader.read("long.wav")
    assert [p.size for p in parts] == [30 * SR, 15 * SR]
    np.testing.assert_array_equal(np.concatenate(parts), wave)
    assert reader.counter.summary() == (
        "long audio (> 30 s, policy chunk): 1 of 1 clips split into segments (longest 45.0 s, 1 extra audio parts)"
    )
    # A tail too short to give an audio token is dropped and counted, not sent.
    counter = LongAudioCounter("chunk", 30.0)
    tail = apply_long_audio_policy(_tone(30.01), SR, 30.0, "chunk", counter=counter)
    assert [p.size for p in tail] == [30 * SR] and counter.seconds_dropped == pytest.approx(0.01)


def test_policy_names_and_unknown_limit():
    with pytest.raises(ValueError, match="must be one of \\('error', 'truncate', 'chunk'\\)"):
        ClipReader(policy="cut")
    reader = ClipReader(max_seconds=None, policy="error")
    assert len(reader.read(_tone(45.0))) == 1
    assert "no limit known" in reader.counter.summary()


def test_clip_seconds_reads_the_header(tmp_path):
    sf.write(tmp_path / "c.wav", _tone(2.5, 22050), 22050)
    assert clip_seconds("c.wav", base_dir=str(tmp_path)) == pytest.approx(2.5)
    assert clip_seconds({"bytes": _wav_bytes(_tone(1.25, 8000), 8000), "path": None}) == pytest.approx(1.25)
    assert clip_seconds(_tone(0.5)) == pytest.approx(0.5)
    with pytest.raises(AudioReadError, match="file not found"):
        clip_seconds("none.wav", base_dir=str(tmp_path))
