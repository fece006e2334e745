import json
import pickle

import numpy as np
import pytest
import torch

from data.batches import batch_rng, get_batch, read_windows
from data.format import corpus_vocabulary, open_tokens
from data.shakespeare.prepare import VAL_WORKS, shakespeare_texts
from data.tokenizer import (
    GPT2_FINGERPRINT,
    fingerprint,
    gpt2_encoding,
    load_hf_tokenizer,
    model_codec,
    same_vocabulary,
    save_hf_tokenizer,
    source_tokenizer,
)
from runtime import UserError


def test_offline_tokenizer_gives_gpt2_ids():
    enc = gpt2_encoding()
    assert enc.n_vocab == 50257 and enc.eot_token == 50256
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.decode(enc.encode("To be, or not to be")) == "To be, or not to be"


def test_shakespeare_split_is_by_whole_works(shakespeare_dir):
    enc = gpt2_encoding()
    texts = shakespeare_texts()
    assert len(texts) == 42
    val = open_tokens(shakespeare_dir, "val")
    expected = [t for name in VAL_WORKS for t in enc.encode_ordinary(texts[name]) + [enc.eot_token]]
    assert np.array_equal(val, np.array(expected, dtype=np.uint16))
    train = open_tokens(shakespeare_dir, "train")
    meta = json.loads((shakespeare_dir / "meta.json").read_text())
    assert meta["splits"]["train"]["tokens"] == len(train) and meta["splits"]["val"]["tokens"] == len(val)
    assert meta["splits"]["train"]["documents"] == 39 and meta["vocab_size"] == 50257
    assert int((train == enc.eot_token).sum()) == 39 and int((val == enc.eot_token).sum()) == 3
    assert 0.05 < len(val) / (len(train) + len(val)) < 0.1


@pytest.mark.slow
def test_gpt2_corpora_and_hugging_face_gpt2_tokenizers_are_one_vocabulary(tmp_path):
    save_hf_tokenizer(tmp_path, 1024)
    record = source_tokenizer(str(tmp_path))
    assert record["tokenizer_fingerprint"] == fingerprint(load_hf_tokenizer(str(tmp_path))) == GPT2_FINGERPRINT
    assert same_vocabulary({"tokenizer": "gpt2", "vocab_size": 50257}, record)
    assert not same_vocabulary({"tokenizer": "gpt2", "vocab_size": 50257}, {**record, "tokenizer_fingerprint": "x"})
    assert same_vocabulary(None, record)  # unknown agrees


@pytest.mark.slow
def test_a_models_recorded_vocabulary_decodes_only_while_its_files_still_hold_it(tmp_path):
    save_hf_tokenizer(tmp_path, 1024)
    record = source_tokenizer(str(tmp_path))
    assert model_codec(record, None).encode("Hello world") == [15496, 995]
    with pytest.raises(UserError, match="is not the one the model was trained with"):
        model_codec({**record, "tokenizer_fingerprint": "0123456789abcdef"}, None)
    chars = tmp_path / "chars"
    chars.mkdir()

    def write_characters(text: str) -> None:
        stoi = {c: i for i, c in enumerate(sorted(set(text)))}
        meta = {"vocab_size": len(stoi), "stoi": stoi, "itos": {i: c for c, i in stoi.items()}}
        (chars / "meta.pkl").write_bytes(pickle.dumps(meta))

    write_characters("abc")
    recorded = corpus_vocabulary(chars)
    assert model_codec(recorded, chars).decode([2, 0]) == "ca"
    write_characters("abcd")  # the folder prepared again: another vocabulary under the same file name
    with pytest.raises(UserError, match="meta.pkl, which holds other characters now"):
        model_codec(recorded, chars)
    with pytest.raises(UserError, match="meta.pkl, which is not there now"):
        model_codec(recorded, tmp_path / "gone")


def test_a_micro_batchs_sampler_is_a_function_of_its_coordinates_only():
    def draw(*coords: int) -> list[int]:
        return batch_rng(*coords).integers(0, 2**62, 4).tolist()

    assert draw(1337, 0, 5, 2) == draw(1337, 0, 5, 2)
    others = [draw(1338, 0, 5, 2), draw(1337, 1, 5, 2), draw(1337, 0, 6, 2), draw(1337, 0, 5, 3)]
    assert all(other != draw(1337, 0, 5, 2) for other in others)


def test_targets_are_the_inputs_shifted_by_one_token_of_the_bin(shakespeare_dir):
    x, y = get_batch(str(shakespeare_dir), "val", 8, 32, 50257, np.random.default_rng(3))
    assert x.shape == y.shape == (8, 32)
    val = open_tokens(shakespeare_dir, "val")
    starts = np.random.default_rng(3).integers(0, len(val) - 32, size=8)  # the draw get_batch makes
    for row, start in enumerate(starts):
        window = torch.from_numpy(val[start : start + 33].astype(np.int64))
        assert torch.equal(x[row], window[:-1]) and torch.equal(y[row], window[1:])


def test_a_bin_of_exactly_one_window_gives_that_window_and_one_token_shorter_is_refused(tmp_path):
    tokens = np.arange(33, dtype=np.uint16) * 7
    tokens.tofile(tmp_path / "val.bin")
    x, y = get_batch(str(tmp_path), "val", 4, 32, 50257, np.random.default_rng(0))
    assert all(torch.equal(row, torch.from_numpy(tokens[:-1].astype(np.int64))) for row in x)
    assert all(torch.equal(row, torch.from_numpy(tokens[1:].astype(np.int64))) for row in y)
    tokens[:-1].tofile(tmp_path / "val.bin")
    with pytest.raises(UserError, match="has 32 tokens, fewer than block_size \\+ 1"):
        get_batch(str(tmp_path), "val", 4, 32, 50257, np.random.default_rng(0))


def test_a_token_id_equal_to_the_vocabulary_size_is_refused_and_the_last_real_id_is_not(tmp_path):
    """Ids run 0..vocab_size-1: one past the end is the off-by-one a corrupt bin or another tokenizer gives."""
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "train.bin")
    rng = np.random.default_rng(0)
    assert read_windows(str(tmp_path), "train", 99, 100, rng, 4).max() == 99  # one window: 0..99
    with pytest.raises(UserError, match="token id 99, outside the model's vocabulary of 99"):
        read_windows(str(tmp_path), "train", 99, 99, rng, 4)
