import hashlib
import json
import math
import random

import datasets
import numpy as np
import pytest

from data import check, pipeline
from data.fineweb_edu import prepare as fineweb_prepare
from data.format import open_tokens
from data.openwebtext import prepare as owt_prepare
from data.tokenizer import EOT_TOKEN, gpt2_encoding

N_DOCS = 400


def make_documents(n: int = N_DOCS) -> list[str]:
    rng = random.Random(0)
    words = ["the", "model", "attention", "layer", "lazy", "Ünïcödé", "GPT-2", "<|endoftext|>", "42", "\n"]
    return [f"Document {i}. " + " ".join(rng.choices(words, k=rng.randint(1, 60))) for i in range(n)]


def nanogpt_bins(docs: list[str], test_size: float = 0.1, seed: int = 2357) -> dict[str, np.ndarray]:
    """The straightforward reference: nanoGPT's prepare.py (train_test_split, encode_ordinary per
    document, EOT after each, concatenated in dataset order)."""
    enc = gpt2_encoding()
    parts = datasets.Dataset.from_dict({"text": docs}).train_test_split(test_size=test_size, seed=seed, shuffle=True)
    return {
        split: np.array([t for d in parts[name]["text"] for t in [*enc.encode_ordinary(d), EOT_TOKEN]], np.uint16)
        for split, name in (("train", "train"), ("val", "test"))
    }


def prepare(inputs, out_dir, *extra, script=owt_prepare) -> int:
    argv = ["--input", *map(str, inputs), "--out_dir", str(out_dir), "--test_size", "0.1", "--num_proc", "2", *extra]
    return pipeline.prepare_main(argv, script.__doc__, "unused", script.hub_options, script.open_hub)


def bins(out_dir) -> dict[str, np.ndarray]:
    return {split: np.array(open_tokens(out_dir, split)) for split in ("train", "val")}


def decode_documents(tokens: np.ndarray) -> list[str]:
    """Documents end at the EOT token id (a literal "<|endoftext|>" in a text is encoded as plain text)."""
    ends = np.flatnonzero(tokens == EOT_TOKEN)
    starts = [0, *(ends[:-1] + 1)]
    return [gpt2_encoding().decode(tokens[a:b].tolist()) for a, b in zip(starts, ends, strict=True)]


def write_jsonl(path, docs, field="text"):
    path.write_text("".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)))
    return path


@pytest.fixture(scope="module")
def docs():
    return make_documents()


def test_jsonl_input_equals_nanogpts_token_stream_and_split(docs, tmp_path):
    assert prepare([write_jsonl(tmp_path / "docs.jsonl", docs)], tmp_path / "out") == 0
    expected = nanogpt_bins(docs)
    got = bins(tmp_path / "out")
    for split in ("train", "val"):
        assert np.array_equal(got[split], expected[split])
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["splits"]["val"]["documents"] == math.ceil(0.1 * N_DOCS)
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == N_DOCS
    assert meta["splits"]["train"]["sha256"] == hashlib.sha256(expected["train"].tobytes()).hexdigest()
    assert meta["vocab_size"] == 50257 and meta["tokenizer"] == "gpt2" and meta["dtype"] == "uint16"


def test_parquet_and_text_inputs_give_the_same_bins_as_jsonl(docs, tmp_path):
    datasets.Dataset.from_dict({"body": docs}).to_parquet(str(tmp_path / "docs.parquet"))
    assert prepare([tmp_path / "docs.parquet"], tmp_path / "pq", "--text_field", "body") == 0
    text_dir = tmp_path / "texts"
    text_dir.mkdir()
    for i, d in enumerate(docs):  # one document per file, named so that sorted order is document order
        (text_dir / f"{i:04d}.txt").write_text(d, encoding="utf-8")
    assert prepare([text_dir], tmp_path / "txt") == 0
    expected = nanogpt_bins(docs)
    for out in ("pq", "txt"):
        got = bins(tmp_path / out)
        assert all(np.array_equal(got[s], expected[s]) for s in ("train", "val")), out


def test_split_is_deterministic_and_follows_the_seed(docs, tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    for out, seed in (("a", "2357"), ("b", "2357"), ("c", "7")):
        assert prepare([path], tmp_path / out, "--seed", seed, "--num_proc", "1" if out == "b" else "2") == 0
    meta = {out: json.loads((tmp_path / out / "meta.json").read_text())["splits"] for out in "abc"}
    assert meta["a"] == meta["b"]
    assert meta["a"]["val"]["sha256"] != meta["c"]["val"]["sha256"]


def test_fraction_is_a_reproducible_random_subset_of_train(docs, tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    for out in ("full", "f1", "f2"):
        assert prepare([path], tmp_path / out, *(["--fraction", "0.25"] if out != "full" else [])) == 0
    full, f1, f2 = (bins(tmp_path / out) for out in ("full", "f1", "f2"))
    assert np.array_equal(f1["train"], f2["train"])
    assert np.array_equal(f1["val"], full["val"])  # val stays whole, so losses stay comparable
    meta = json.loads((tmp_path / "f1" / "meta.json").read_text())
    assert meta["splits"]["train"]["documents"] == math.ceil(0.25 * (N_DOCS - 40))
    assert meta["subset"] == {"fraction": 0.25, "max_tokens": None}
    # The shuffled train split's first quarter: a random subset, not the corpus's first documents.
    assert np.array_equal(f1["train"], full["train"][: len(f1["train"])])
    kept = [int(d.split(".")[0].removeprefix("Document ")) for d in decode_documents(f1["train"])]
    assert len(kept) == 90 and sorted(kept) != list(range(90)) and max(kept) > 300


def test_max_tokens_stops_after_the_document_that_reaches_it(docs, tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    assert prepare([path], tmp_path / "full") == 0
    assert prepare([path], tmp_path / "cap", "--max_tokens", "1000") == 0
    full, cap = bins(tmp_path / "full"), bins(tmp_path / "cap")
    assert np.array_equal(cap["train"], full["train"][: len(cap["train"])])
    ends = np.flatnonzero(full["train"] == EOT_TOKEN) + 1
    assert len(cap["train"]) == ends[np.searchsorted(ends, 1000)]  # whole documents, the first >= 1000
    assert np.array_equal(cap["val"], full["val"])


def test_interrupted_run_leaves_nothing_that_looks_complete(docs, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    out = tmp_path / "out"
    assert prepare([path], out) == 0
    calls = []
    real = pipeline.encode_documents

    def interrupted(texts, encoder):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(texts, encoder)

    monkeypatch.setattr(pipeline, "encode_documents", interrupted)
    monkeypatch.setattr(pipeline, "BATCH_DOCS", 16)
    with pytest.raises(KeyboardInterrupt):
        prepare([path], out, "--force")
    assert not (out / "meta.json").exists()
    assert not list(out.glob("*.tmp"))
    assert check.main([str(out)]) == 1


def test_rerun_over_complete_output_says_so_and_keeps_it(docs, tmp_path, capsys):
    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    assert prepare([path], tmp_path / "out") == 0
    before = (tmp_path / "out" / "train.bin").stat().st_mtime_ns
    assert prepare([path], tmp_path / "out") == 0
    assert "already prepared" in capsys.readouterr().out
    assert (tmp_path / "out" / "train.bin").stat().st_mtime_ns == before


def test_bad_inputs_fail_clearly(docs, tmp_path, capsys):
    assert prepare([tmp_path / "missing.jsonl"], tmp_path / "a") == 1
    assert "not found" in capsys.readouterr().err
    path = write_jsonl(tmp_path / "docs.jsonl", docs, field="content")
    assert prepare([path], tmp_path / "b") == 1
    assert "no 'text' field" in capsys.readouterr().err
    assert not (tmp_path / "b" / "meta.json").exists()


def test_streamed_split_depends_on_text_not_order(docs):
    def split_of(stream):
        return {split: sorted(t for b in [bs for s, bs in out if s == split] for t in b) for split in ("train", "val")}

    shuffled = random.Random(1).sample(docs, len(docs))
    runs = []
    for stream in (docs, shuffled):
        batches = pipeline.streamed_batches(iter(stream), test_size=0.1, seed=2357, fraction=0.5)
        out = list(batches(set()))
        runs.append(split_of(out))
    assert runs[0] == runs[1]
    assert 20 < len(runs[0]["val"]) < 60 and 150 < len(runs[0]["train"]) < 210
    assert not set(runs[0]["val"]) & set(runs[0]["train"])


def test_fineweb_script_prepares_local_parquet(docs, tmp_path):
    datasets.Dataset.from_dict({"text": docs}).to_parquet(str(tmp_path / "shard.parquet"))
    assert prepare([tmp_path], tmp_path / "out", script=fineweb_prepare) == 0
    assert check.main([str(tmp_path / "out")]) == 0


def test_check_accepts_a_sound_folder_and_names_each_problem(docs, tmp_path, capsys):
    out = tmp_path / "out"
    assert prepare([write_jsonl(tmp_path / "docs.jsonl", docs)], out) == 0
    assert check.main([str(out)]) == 0
    assert "ok (hashes match)" in capsys.readouterr().out
    train = out / "train.bin"
    data = bytearray(train.read_bytes())
    data[:2] = np.array([60000], np.uint16).tobytes()
    train.write_bytes(bytes(data))
    assert check.main([str(out)]) == 1
    err = capsys.readouterr().err
    assert "token id 60000, outside the vocabulary of 50257" in err and "sha256" in err
    train.write_bytes(bytes(data[:-1]))
    assert check.main([str(out)]) == 1
    assert "not a whole number of uint16 tokens" in capsys.readouterr().err


def test_tokenizer_uses_tiktoken_cache_only_when_complete(tmp_path, monkeypatch):
    from data import tokenizer

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert not tokenizer.tiktoken_has_gpt2()  # empty cache: the shipped ranks, no download
    contents = {url: url.encode() for url in tokenizer.TIKTOKEN_GPT2_FILES}
    for url, data in contents.items():
        (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(data)
    assert not tokenizer.tiktoken_has_gpt2()  # files present but not the right ones: tiktoken would refetch
    hashes = {url: hashlib.sha256(data).hexdigest() for url, data in contents.items()}
    monkeypatch.setattr(tokenizer, "TIKTOKEN_GPT2_FILES", hashes)
    assert tokenizer.tiktoken_has_gpt2()
    monkeypatch.setattr(tokenizer.tiktoken, "get_encoding", lambda name: f"tiktoken's {name}")
    assert tokenizer.gpt2_encoding.__wrapped__() == "tiktoken's gpt2"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # caching disabled: tiktoken would always download
    assert not tokenizer.tiktoken_has_gpt2()


@pytest.mark.parametrize("script", [owt_prepare, fineweb_prepare])
def test_hub_source_offline_fails_fast_and_points_to_input(script, tmp_path, capsys):
    argv = ["--out_dir", str(tmp_path / "out"), "--max_tokens", "1000"]
    assert pipeline.prepare_main(argv, script.__doc__, "unused", script.hub_options, script.open_hub) == 1
    err = capsys.readouterr().err
    assert script.HUB_DATASET in err and "--input" in err
    assert not (tmp_path / "out").exists()


def test_edited_text_files_are_read_again_not_from_the_cache(tmp_path):
    text_dir = tmp_path / "texts"
    text_dir.mkdir()
    for i in range(20):
        (text_dir / f"{i:02d}.txt").write_text(f"first version of document {i}")
    assert prepare([text_dir], tmp_path / "out") == 0
    (text_dir / "05.txt").write_text("the second version, longer than the first one was")
    assert prepare([text_dir], tmp_path / "out", "--force") == 0
    texts = [gpt2_encoding().decode(t.tolist()) for t in bins(tmp_path / "out").values()]
    assert any("second version" in t for t in texts)


def test_redpajama_sources_get_their_share_of_the_budget(docs, tmp_path, capsys):
    from data.redpajama import prepare as redpajama

    for i, source in enumerate(("arxiv", "cc", "github")):
        (tmp_path / "in" / source).mkdir(parents=True)
        write_jsonl(tmp_path / "in" / source / "part.jsonl", [f"{source} {d}" for d in docs[i::3]])
    argv = [
        "--input",
        str(tmp_path / "in"),
        "--out_dir",
        str(tmp_path / "out"),
        "--max_tokens",
        "4000",
        "--test_size",
        "0.1",
    ]
    assert redpajama.main(argv) == 0
    shares = {"arxiv": 2.5, "cc": 67.0, "github": 4.5}
    longest = max(len(gpt2_encoding().encode_ordinary(f"github {d}")) + 1 for d in docs)
    for source, weight in shares.items():
        meta = json.loads((tmp_path / "out" / source / "meta.json").read_text())
        budget = round(4000 * weight / sum(shares.values()))
        assert meta["subset"]["max_tokens"] == budget and meta["weight"] == weight
        assert budget <= meta["splits"]["train"]["tokens"] < budget + longest  # stops at the document reaching it
    out = capsys.readouterr().out
    assert "no folder for book, c4, stackexchange, wikipedia" in out and f"{tmp_path}/out/cc': 67.0" in out
    (tmp_path / "in" / "mystery").mkdir()
    assert redpajama.main([*argv, "--force"]) == 1
    assert "sources ['mystery'] have no weight: give --weights" in capsys.readouterr().err


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_a_streamed_val_split_is_the_same_whatever_the_cut_and_the_threads(docs, tmp_path, monkeypatch, threads):
    monkeypatch.setattr(pipeline, "BATCH_DOCS", 8)  # many batches in flight when train fills up
    stream = [*docs, *(f"second pass {d}" for d in docs)]

    def prepared(out, max_tokens):
        batches = pipeline.streamed_batches(iter(stream), test_size=0.05, seed=2357, fraction=None)
        return pipeline.write_corpus(tmp_path / out, batches, threads, {}, max_tokens)["splits"]

    whole = prepared("whole", None)
    assert 20 < whole["val"]["documents"] < 60
    for max_tokens in (200, 3000):
        cut = prepared(f"cut{max_tokens}", max_tokens)
        assert cut["train"]["tokens"] < whole["train"]["tokens"]
        assert cut["val"] == whole["val"]  # val stays whole: every val document of the stream, in order


def test_a_file_named_twice_or_under_two_given_paths_is_read_once(docs, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    path = write_jsonl(folder / "docs.jsonl", docs)
    assert prepare([path], tmp_path / "once") == 0
    assert prepare([folder, folder], tmp_path / "twice") == 0
    assert prepare([folder, tmp_path / "in" / ".." / "in" / "docs.jsonl"], tmp_path / "overlap") == 0
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "other_name.jsonl").hardlink_to(path)  # one file under two names
    assert prepare([folder, linked], tmp_path / "hardlink") == 0
    once = bins(tmp_path / "once")
    for out in ("twice", "overlap", "hardlink"):
        assert all(np.array_equal(bins(tmp_path / out)[s], once[s]) for s in ("train", "val")), out


def test_a_bad_input_file_is_named_in_one_line_with_its_row(docs, tmp_path, capsys):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("a good document")
    (texts / "b.txt").write_bytes(b"Latin-1, not UTF-8: caf\xe9")
    rows = tmp_path / "rows"
    rows.mkdir()
    write_jsonl(rows / "a.jsonl", docs[:10])
    (rows / "b.jsonl").write_text('{"text": "fine"}\n{"text": "fine too"}\n{"id": 3}\n')  # its third row: no text
    (tmp_path / "null.jsonl").write_text('{"text": "fine"}\n{"text": null}\n')
    (tmp_path / "numbers.jsonl").write_text('{"text": 1}\n{"text": 2}\n')
    latin = tmp_path / "latin"
    latin.mkdir()
    write_jsonl(latin / "a.jsonl", docs[:3])
    (latin / "b.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    mixed, lists = tmp_path / "mixed", tmp_path / "lists"  # a good file, then a bad one (datasets casts to the first)
    for folder, bad in ((mixed, '{"text": 1}\n'), (lists, '{"text": ["x"]}\n')):
        folder.mkdir()
        write_jsonl(folder / "a.jsonl", docs[:10])
        (folder / "b.jsonl").write_text(bad)
    tables = tmp_path / "tables"
    tables.mkdir()
    datasets.Dataset.from_dict({"text": docs[:5]}).to_parquet(str(tables / "a.parquet"))
    datasets.Dataset.from_dict({"body": docs[:5]}).to_parquet(str(tables / "b.parquet"))
    expected = {
        latin: f"{latin / 'b.jsonl'}: row 2 is not UTF-8 text in its 'text' field",
        mixed: f"{mixed / 'b.jsonl'}: its 'text' field holds int64, not text; see --text_field",
        lists: f"{lists / 'b.jsonl'}: its 'text' field holds list<item: string>, not text; see --text_field",
        texts: f"{texts / 'b.txt'}: not UTF-8 text (unexpected end of data at byte 23)",
        rows: f"{rows / 'b.jsonl'}: row 3 has no text in its 'text' field (null or missing)",
        tmp_path / "null.jsonl": f"{tmp_path / 'null.jsonl'}: row 2 has no text in its 'text' field (null or missing)",
        tables: f"{tables / 'b.parquet'}: its columns ['body'] are not those of {tables / 'a.parquet'} (['text'])",
        tmp_path / "numbers.jsonl": f"{tmp_path / 'numbers.jsonl'}: its 'text' field holds int64, not text; "
        "see --text_field",
    }
    for i, (path, message) in enumerate(expected.items()):
        assert prepare([path], tmp_path / f"out{i}") == 1
        assert capsys.readouterr().err.splitlines()[-1] == f"error: {message}"  # after datasets' progress bars
        assert not (tmp_path / f"out{i}" / "meta.json").exists()


def test_a_rerun_with_other_settings_is_refused_not_taken_for_done(docs, tmp_path, capsys):
    from data.redpajama import prepare as redpajama

    for i, source in enumerate(("arxiv", "cc")):
        (tmp_path / "in" / source).mkdir(parents=True)
        write_jsonl(tmp_path / "in" / source / "part.jsonl", [f"{source} {d}" for d in docs[i::2]])
    argv = ["--input", str(tmp_path / "in"), "--out_dir", str(tmp_path / "rp"), "--test_size", "0.1"]
    assert redpajama.main([*argv, "--max_tokens", "4000"]) == 0
    assert redpajama.main([*argv, "--max_tokens", "4000"]) == 0
    assert "already prepared" in capsys.readouterr().out
    assert redpajama.main([*argv, "--max_tokens", "8000"]) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'rp' / 'arxiv'} was prepared with max_tokens 144, not 288" in err and "--force" in err
    assert json.loads((tmp_path / "rp" / "arxiv" / "meta.json").read_text())["subset"]["max_tokens"] == 144
    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    assert prepare([path], tmp_path / "owt", "--max_tokens", "1000") == 0
    for other in (["--max_tokens", "2000"], ["--seed", "7", "--max_tokens", "1000"], []):
        assert prepare([path], tmp_path / "owt", *other) == 1
        assert "was prepared with" in capsys.readouterr().err
    assert prepare([path], tmp_path / "owt", "--max_tokens", "2000", "--force") == 0


@pytest.mark.parametrize(
    "option, message",
    [
        (["--test_size", "0"], "--test_size must be in (0, 1)"),
        (["--test_size", "1.5"], "--test_size must be in (0, 1)"),
        (["--max_tokens", "0"], "--max_tokens must be at least 1"),
        (["--max_tokens", "-100"], "--max_tokens must be at least 1"),
        (["--num_proc", "0"], "--num_proc must be at least 1"),
    ],
)
def test_every_prepare_script_checks_its_options_alike(option, message, tmp_path, capsys):
    from data.python import prepare as python_prepare
    from data.redpajama import prepare as redpajama

    (tmp_path / "in" / "cc").mkdir(parents=True)
    redpajama_argv = ["--input", str(tmp_path / "in"), "--max_tokens", "1000"]
    for main, argv in ((python_prepare.main, []), (redpajama.main, redpajama_argv)):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--out_dir", str(tmp_path / "out"), *option])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "out").exists()


def test_a_rerun_with_other_input_files_or_text_field_is_refused(docs, tmp_path, capsys):
    inputs = {name: tmp_path / name for name in ("a", "b")}
    for i, folder in enumerate(inputs.values()):
        folder.mkdir()
        write_jsonl(folder / "docs.jsonl", docs[i::2])
        write_jsonl(folder / "body.jsonl", docs[i::2], field="body")
    out = tmp_path / "out"
    assert prepare([inputs["a"] / "docs.jsonl"], out) == 0
    assert prepare([tmp_path / "a" / ".." / "a" / "docs.jsonl"], out) == 0  # the same file, spelt otherwise
    assert prepare([inputs["a"] / "docs.jsonl"], out, "--tokenizer", "") == 0  # GPT-2, spelt otherwise
    assert "already prepared" in capsys.readouterr().out
    for other in ([inputs["b"] / "docs.jsonl"], [inputs["a"] / "body.jsonl", "--text_field", "body"]):
        assert prepare(other, out) == 1
        assert f"error: {out} was prepared with input [" in capsys.readouterr().err


def test_a_rerun_with_another_fineweb_subset_is_refused(docs, tmp_path, capsys):
    def fake_hub(args):  # fineweb_prepare.open_hub with its stream replaced by local texts
        return pipeline.streamed_batches(iter(docs), args.test_size, args.seed, None), None, {"source": "hub"}

    argv = ["--out_dir", str(tmp_path / "fw"), "--test_size", "0.1", "--num_proc", "1"]
    assert (
        pipeline.prepare_main([*argv, "--subset", "sample-10BT"], "", "unused", fineweb_prepare.hub_options, fake_hub)
        == 0
    )
    assert (
        pipeline.prepare_main([*argv, "--subset", "sample-100BT"], "", "unused", fineweb_prepare.hub_options, fake_hub)
        == 1
    )
    assert "was prepared with subset sample-10BT, not sample-100BT" in capsys.readouterr().err
    assert json.loads((tmp_path / "fw" / "meta.json").read_text())["options"]["subset"] == "sample-10BT"
