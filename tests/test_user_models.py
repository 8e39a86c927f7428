"""Users' own models as users write them (tuple/dict outputs, frozen layers, a mismatched
num_classes, 1-D and 3-D inputs): counted with hand-computed FLOPs, trained by the real payload,
refused in one line when they cannot train. Real PyTorch on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from launcher.cli import app
from launcher.estimate import baseline, hostram
from launcher.estimate.flops import workload_cost
from launcher.errors import SpecError
from launcher.spec import parse_spec

REPO = Path(__file__).resolve().parent.parent
cli = CliRunner()

NETS = '''
import torch
from torch import nn


class TwoHeads(nn.Module):
    """head and aux read the same features; only the logits are trained."""

    def __init__(self, kind="tuple", n=4):
        super().__init__()
        self.kind = kind
        self.head = nn.Linear(8, n, bias=False)
        self.aux = nn.Linear(8, n, bias=False)

    def forward(self, x):
        logits, aux = self.head(x), self.aux(x)
        if self.kind == "tuple":
            return logits, aux
        if self.kind == "dict":  # the logits are the 'logits' entry, not the first one
            return {"aux": aux, "logits": logits}
        return [logits, aux]


def heads(kind="tuple", n=4):
    return TwoHeads(kind, n)


def frozen_backbone():
    body = nn.Sequential(nn.Conv1d(1, 4, 5, bias=False), nn.AdaptiveAvgPool1d(1), nn.Flatten())
    for p in body.parameters():
        p.requires_grad = False
    return nn.Sequential(nn.Unflatten(1, (1, 64)), body, nn.Linear(4, 3, bias=False))


def all_frozen():
    m = nn.Linear(8, 4)
    m.requires_grad_(False)
    return m


def video():
    return nn.Sequential(nn.Conv3d(2, 4, 3, padding=1, bias=False), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                         nn.Linear(4, 3, bias=False))


def huge(width=100_000):  # 30 B parameters: 120 GB of fp32 weights before gradients and momentum
    return nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(3)])


class DataDependent(nn.Module):
    """Operations the meta device cannot run: their output's shape (or Python value) is the data's."""

    def __init__(self, op="nonzero"):
        super().__init__()
        self.op = op
        self.fc = nn.Linear(8, 4, bias=False)

    def forward(self, x):
        h = self.fc(x)
        if self.op == "nonzero":
            return h + torch.nonzero(h > 0).shape[0] * 0.0
        if self.op == "masked_select":
            return h + torch.masked_select(h, h > 0).sum() * 0.0
        return h * 2 if h.mean().item() > 100 else h  # control flow on a value


def data_dependent(op="nonzero"):
    return DataDependent(op)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x, lengths):
        return self.fc(x)


def two_inputs():
    return TwoInputs()


def dense():  # a segmenter: a class per pixel
    return nn.Conv2d(3, 10, 1)


def on_device():
    return nn.Linear(8, 4).to("cpu")


def pretrained():
    m = nn.Linear(8, 4)
    m.load_state_dict(torch.load("w.pt"))
    return m


class Text(nn.Module):
    """A text classifier fed token ids: embedding (or a bag of them), mean over the tokens, a head."""

    def __init__(self, bag=False, vocab=100, dim=8, n=4):
        super().__init__()
        self.bag = bag
        self.emb = nn.EmbeddingBag(vocab, dim) if bag else nn.Embedding(vocab, dim)
        self.fc = nn.Linear(dim, n, bias=False)

    def forward(self, ids):
        return self.fc(self.emb(ids) if self.bag else self.emb(ids).mean(1))


def text(bag=False):
    return Text(bag)


class LMOutput:
    """What a Hugging Face causal LM returns (transformers.modeling_outputs.CausalLMOutput): the
    logits as an attribute, beside a loss the model did not compute (no labels were passed)."""

    def __init__(self, logits):
        self.loss, self.logits = None, logits


class HFStyleLM(nn.Module):
    """Token ids [batch, seq] -> logits [batch, seq, 16], returned as a Hugging Face model would."""

    def __init__(self, kind="object"):
        super().__init__()
        self.kind = kind
        self.emb = nn.Embedding(16, 8)
        self.head = nn.Linear(8, 16, bias=False)

    def forward(self, ids):
        h = self.emb(ids)
        logits = self.head(h)
        if self.kind == "object":
            return LMOutput(logits)
        if self.kind == "dict":  # the logits are the 'logits' entry, not the first one
            return {"hidden_states": h, "logits": logits}
        return (logits, h)  # return_dict=False: a tuple, the logits first


def hf_lm(kind="object"):
    return HFStyleLM(kind)


class SmallTableLM(nn.Module):
    """Token ids -> logits over ``vocab`` entries, the ids embedded by a table of ``rows`` rows
    beside a position table of seq_len rows (called on arange, not on the ids)."""

    def __init__(self, rows=16, vocab=32, seq=8, bert=False):
        super().__init__()
        self.tok = nn.Embedding(rows, 8)
        self.pos = nn.Embedding(seq, 8)
        self.head = nn.Linear(8, vocab, bias=False)
        self.bert = bert
        if bert:
            self.segment = nn.Embedding(2, 8)  # BERT's token types: called on zeros shaped like the ids

    def forward(self, ids):
        positions = torch.arange(ids.shape[1], device=ids.device)
        if not self.bert:
            return self.head(self.tok(ids) + self.pos(positions))
        positions = positions.unsqueeze(0).expand(ids.shape[0], -1)  # [batch, seq], as many models do
        return self.head(self.tok(ids) + self.pos(positions) + self.segment(torch.zeros_like(ids)))


def small_table_lm(rows=16, vocab=32, bert=False):
    return SmallTableLM(rows, vocab, bert=bert)


def strings():
    class Words(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return {"text": "no tensor here"}
    return Words()
'''


@pytest.fixture(autouse=True)
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    (tmp_path / "nets.py").write_text(NETS, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _spec(fn: str, shape: list, num_classes: int = 4, **args) -> str:
    return json.dumps({"name": "user-model", "workload": {
        "model": f"nets.py:{fn}", "model_args": args, "input_shape": shape, "num_classes": num_classes,
        "batch_size": 4, "samples_per_epoch": 32, "precision": "fp32"}})


def _train(project: Path, spec: str, steps: int = 3) -> tuple[subprocess.CompletedProcess, list]:
    cfg = {**parse_spec(spec).workload.model_dump(mode="json"), "output_dir": str(project / "out")}
    (project / "job.json").write_text(json.dumps(cfg), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(REPO / "payloads" / "train.py"), "--config", "job.json",
                           "--device", "cpu", "--max-steps", str(steps), "--log-every", "1"],
                          capture_output=True, text=True, timeout=300, cwd=project)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, [e for e in events if e["event"] == "step"]


@pytest.mark.parametrize("kind", ["tuple", "dict", "list"])
def test_a_model_with_an_aux_output_is_counted_on_its_logits(kind):
    # Hand count per sample (input [8], two bias-free 8 -> 4 heads): forward 2 x 2 x 8 x 4 = 128;
    # backward: only the logits' head gets a weight gradient (2 x 8 x 4 = 64; the input needs none).
    cost = workload_cost(parse_spec(_spec("heads", [8], kind=kind)).workload)
    assert cost.forward_flops_per_sample == pytest.approx(128)
    assert cost.train_flops_per_sample == pytest.approx(192)


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_the_payload_trains_a_model_with_an_aux_output(project, kind):
    proc, steps = _train(project, _spec("heads", [8], kind=kind))
    assert len(steps) == 3 and all(e["loss"] > 0 for e in steps), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_frozen_layers_get_no_gradient_in_the_count():
    # Input [64] -> Conv1d(1, 4, k=5) frozen: 60 positions x 4 x 5 MACs = 1,200 -> 2,400 FLOPs forward,
    # no backward; Linear(4, 3): 24 forward, 24 weight gradient (its input needs no gradient).
    cost = workload_cost(parse_spec(_spec("frozen_backbone", [64], num_classes=3)).workload)
    assert cost.forward_flops_per_sample == pytest.approx(2424)
    assert cost.train_flops_per_sample == pytest.approx(2448)
    assert cost.params == 4 * 5 + 4 * 3


def test_a_video_input_is_counted_in_three_dimensions():
    # [2, 4, 6, 6] -> Conv3d(2, 4, 3, padding 1): 4 x 6 x 6 x 4 outputs x 2 x 27 MACs = 31,104 -> 62,208;
    # its weight gradient as much again (the input needs none); Linear(4, 3): 24 forward, 24 weight
    # gradient and 24 input gradient (the convolution below it trains).
    cost = workload_cost(parse_spec(_spec("video", [2, 4, 6, 6], num_classes=3)).workload)
    assert cost.train_flops_per_sample == pytest.approx(2 * 62208 + 3 * 24)


@pytest.mark.parametrize("fn, shape, num_classes, fragment", [
    ("heads", [8], 10, "the model's output has 4 classes (dim 1 of [batch, 4]) but workload.num_classes is 10"),
    ("all_frozen", [8], 4, "has no trainable parameter (36 parameters, every one with requires_grad=False)"),
    ("strings", [8], 4, "the model returned dict, not logits"),
])
def test_a_model_that_cannot_train_is_one_line_before_any_machine(project, fn, shape, num_classes, fragment):
    (project / "job.yaml").write_text(_spec(fn, shape, num_classes), encoding="utf-8")
    res = cli.invoke(app, ["estimate", "job.yaml", "--no-baseline"])
    assert res.exit_code != 0 and fragment in res.output, res.output
    assert "nets.py" in res.output and "Traceback" not in res.output
    assert len([line for line in res.output.splitlines() if line.strip()]) == 1, res.output


def test_the_payload_refuses_more_labels_than_the_model_has_classes(project):
    proc, steps = _train(project, _spec("heads", [8], num_classes=10))
    assert proc.returncode == 2 and not steps
    assert "the model's output has 4 classes" in proc.stderr and "Traceback" not in proc.stderr


def test_the_estimate_header_shows_a_small_model_s_flops_in_its_own_unit(project):
    (project / "job.yaml").write_text(_spec("heads", [8]), encoding="utf-8")
    res = cli.invoke(app, ["estimate", "job.yaml", "--no-baseline"])
    assert res.exit_code == 0, res.output
    assert "192 FLOP/sample (train)" in res.output.splitlines()[0]
    from launcher.render import fmt_flops

    assert [fmt_flops(x) for x in (40448, 1.376e6, 15.47e9, 2.4e12)] == \
        ["40.4 kFLOP", "1.4 MFLOP", "15.5 GFLOP", "2.4 TFLOP"]


def test_validate_names_a_non_image_input_by_its_shape(project):
    (project / "job.yaml").write_text(_spec("video", [2, 4, 6, 6], num_classes=3), encoding="utf-8")
    res = cli.invoke(app, ["validate", "job.yaml"])
    assert res.exit_code == 0 and "input [2, 4, 6, 6]" in res.output and "px" not in res.output, res.output


def test_a_model_no_gpu_holds_says_so_instead_of_pointing_at_alternatives(project):
    (project / "job.yaml").write_text(_spec("huge", [100_000], num_classes=10), encoding="utf-8")
    res = cli.invoke(app, ["estimate", "job.yaml", "--no-baseline", "--json"])
    assert res.exit_code == 0, res.output
    est = json.loads(res.output)
    assert not any(c["fits_memory"] for c in est["candidates"])
    sentence = est["summary"]["sentence"]
    assert sentence.startswith("No GPU in the catalog holds this job: batch 4 needs ") and "alternatives" not in sentence
    assert "the model alone does not fit one GPU" in sentence
    res = cli.invoke(app, ["estimate", "job.yaml", "--no-baseline"], terminal_width=80)
    free = [line for line in res.output.splitlines() if line.startswith("free")]
    assert free and all(line.startswith("free!") for line in free), res.output


def test_a_model_too_big_for_this_machine_s_ram_is_not_probed(monkeypatch):
    # 3 x 2,000 x 2,000 = 12 M parameters: 137 MiB of weights, gradients and momentum, over half of
    # a 256 MiB machine. Building it for the probe would run the machine out of memory.
    monkeypatch.setattr(hostram, "ram_bytes", lambda: 256 * 2**20)
    spec = parse_spec(_spec("huge", [2000], num_classes=10, width=2000))
    base = baseline.measure_baseline(spec, probe_seconds=2.0)
    assert not base.measured and base.samples_per_second > 0
    assert base.note.startswith("a 12 M-parameter model is not probed on this CPU (its weights, gradients and "
                                "momentum need 0.1 GiB; this machine has 0.2 GiB of RAM)"), base.note


@pytest.mark.parametrize("op", ["nonzero", "masked_select", "item"])
def test_operations_without_a_meta_kernel_are_counted_on_the_cpu(op):
    # Linear(8, 4) without bias: 64 FLOPs forward, 64 for its weight gradient; the data-dependent
    # operations around it are element-wise (not in torch's FLOP formulas).
    cost = workload_cost(parse_spec(_spec("data_dependent", [8], op=op)).workload)
    assert cost.forward_flops_per_sample == pytest.approx(64)
    assert cost.train_flops_per_sample == pytest.approx(128)
    assert cost.ops["classes"]["matmul"]["kernels"] >= 2


def test_a_model_too_big_to_count_on_the_cpu_keeps_the_meta_error_in_one_line(project, monkeypatch):
    monkeypatch.setattr(hostram, "ram_bytes", lambda: 1024)
    (project / "job.yaml").write_text(_spec("data_dependent", [8], op="masked_select"), encoding="utf-8")
    res = cli.invoke(app, ["estimate", "job.yaml", "--no-baseline"])
    assert res.exit_code != 0 and "cannot train on input_shape [8]" in res.output and "masked_select" in res.output
    assert len([line for line in res.output.splitlines() if line.strip()]) == 1, res.output


def test_a_model_that_fails_on_the_input_names_the_project_line_and_the_fix(project):
    # TwoHeads' layers take 8 features, the spec gives 6: the line is the user's forward.
    (project / "job.yaml").write_text(_spec("heads", [6]), encoding="utf-8")
    res = cli.invoke(app, ["estimate", "job.yaml", "--no-baseline"])
    line = 1 + NETS.splitlines().index("        logits, aux = self.head(x), self.aux(x)")
    assert res.exit_code != 0 and res.output.startswith(f"error: nets.py:{line}: model 'nets.py:heads' cannot "
                                                        "train on input_shape [6]: RuntimeError: "), res.output
    assert "Traceback" not in res.output
    (project / "job.yaml").write_text(_spec("two_inputs", [8]), encoding="utf-8")
    res = cli.invoke(app, ["estimate", "job.yaml", "--no-baseline"])
    assert "missing 1 required positional argument: 'lengths'" in res.output, res.output
    assert "gpujob calls forward(x) with the input batch alone: give forward's other arguments defaults" in res.output


def test_an_image_dataset_needs_an_image_input_shape():
    spec = json.loads(_spec("heads", [8]))
    spec["workload"]["dataset"] = "digits"
    with pytest.raises(SpecError) as e:
        parse_spec(json.dumps(spec), "job.yaml")
    assert "dataset digits holds images" in str(e.value) and "input_shape [8] is not one" in str(e.value)
    spec["workload"]["input_shape"] = [1, 8, 8]
    assert parse_spec(json.dumps(spec)).workload.sample_shape == (1, 8, 8)


def test_the_payload_refuses_a_segmenter_on_a_dataset_of_one_label_per_image(project):
    spec = json.loads(_spec("dense", [3, 8, 8], num_classes=10))
    spec["workload"]["dataset"] = "digits"
    proc, steps = _train(project, json.dumps(spec))
    assert proc.returncode == 2 and not steps and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "needs a label per position; dataset digits has one label per image" in proc.stderr


def test_a_factory_that_moves_its_model_is_told_gpujob_moves_it(project):
    (project / "job.yaml").write_text(_spec("on_device", [8]), encoding="utf-8")
    res = cli.invoke(app, ["estimate", "job.yaml", "--no-baseline"])
    assert res.exit_code != 0 and "the factory moves the model to a device with .cuda() or .to(): return it as " \
        "built, gpujob moves it to the GPU itself" in res.output, res.output


def test_a_factory_loading_weights_is_counted_without_torch_s_warnings(project):
    import warnings

    import torch

    torch.save(torch.nn.Linear(8, 4).state_dict(), project / "w.pt")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        cost = workload_cost(parse_spec(_spec("pretrained", [8])).workload)
    assert cost.params == 36 and not [str(w.message) for w in said]


def _text_spec(bag: bool, **workload) -> str:
    spec = json.loads(_spec("text", [16], bag=bag))
    spec["workload"].update(vocab_size=100, **workload)
    return json.dumps(spec)


@pytest.mark.parametrize("bag", [False, True])
def test_a_text_classifier_fed_token_ids_is_counted_and_trained(project, bag):
    # Token ids 0..99 of 16 tokens per sample, one label each. The embedding (a lookup) and the mean
    # are not in torch's FLOP formulas; Linear(8, 4): 64 forward, 64 weight and 64 input gradient
    # (the embedding below it trains).
    w = parse_spec(_text_spec(bag)).workload
    assert w.input_vocab == 100 and not w.is_token_model
    cost = workload_cost(w)
    assert cost.train_flops_per_sample == pytest.approx(192)
    assert cost.params == 100 * 8 + 8 * 4
    proc, steps = _train(project, _text_spec(bag))
    assert len(steps) == 3 and all(e["loss"] > 0 for e in steps), proc.stderr[-2000:]


def test_token_ids_need_an_input_shape_and_synthetic_data():
    spec = json.loads(_text_spec(False))
    del spec["workload"]["input_shape"]
    with pytest.raises(SpecError) as e:
        parse_spec(json.dumps(spec), "job.yaml")
    assert "a model factory fed token ids needs input_shape" in str(e.value)
    with pytest.raises(SpecError) as e:
        parse_spec(_text_spec(False, dataset="digits"), "job.yaml")
    assert "a model fed token ids (vocab_size) trains on dataset: synthetic" in str(e.value)


def test_a_model_fed_token_ids_without_vocab_size_is_told_to_add_it(project):
    spec = json.loads(_text_spec(False))
    del spec["workload"]["vocab_size"]
    (project / "job.yaml").write_text(json.dumps(spec), encoding="utf-8")
    res = cli.invoke(app, ["estimate", "job.yaml", "--no-baseline"])
    assert res.exit_code == 2 and "the model takes token ids: add workload.vocab_size" in res.output, res.output


@pytest.mark.parametrize("kind", ["object", "dict", "tuple"])
def test_a_language_model_returning_hugging_face_outputs_is_counted_and_trained(project, kind):
    # Token ids below 16, sequences of 8 tokens. Per token: Linear(8, 16) forward 2 x 8 x 16 = 256,
    # its weight gradient 256 and its input gradient 256 (the embedding below it trains); the
    # hidden states beside the logits are not trained. The CPU probe runs the same loop.
    text = json.dumps({"name": "hf-lm", "workload": {
        "model": "nets.py:hf_lm", "model_args": {"kind": kind}, "seq_len": 8, "vocab_size": 16,
        "batch_size": 4, "samples_per_epoch": 3 * 4 * 8, "precision": "fp32"}})
    w = parse_spec(text).workload
    assert w.is_token_model
    cost = workload_cost(w)
    assert cost.ops["forward_flops_per_sample"] == pytest.approx(256)
    assert cost.ops["train_flops_per_sample"] == pytest.approx(768)
    proc, steps = _train(project, text)
    assert len(steps) == 3 and all(e["loss"] > 0 for e in steps), proc.stderr[-2000:]
    assert steps[-1]["samples"] == 3 * 4 * 8  # tokens


def test_a_factory_that_prints_leaves_json_on_stdout_alone(project):
    # Users print in their models ("built with N params"); estimate --json and validate --json
    # keep stdout for the JSON: what the factory prints while it is counted goes to stderr.
    (project / "chatty.py").write_text(
        "import torch\nprint('importing chatty')\n"
        "def build():\n    print('built chatty')\n    return torch.nn.Linear(8, 4)\n", encoding="utf-8")
    spec = json.loads(_spec("heads", [8]))
    spec["workload"].update(model="chatty.py:build", model_args={})
    (project / "job.yaml").write_text(json.dumps(spec), encoding="utf-8")
    res = cli.invoke(app, ["validate", "job.yaml", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)[0]["ok"], res.output
    assert "built chatty" in res.stderr
    (project / "home").rename(project / "home-old")  # not cached: the estimate counts it again
    res = cli.invoke(app, ["estimate", "job.yaml", "--no-baseline", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["job"]["params"] == 36, res.output


def test_a_language_model_with_fewer_logits_than_vocab_size_is_one_line_before_any_machine(project):
    # nets.py:hf_lm predicts 16 tokens; vocab_size 32 draws ids up to 31. validate and estimate
    # passed it, then the run died on 'IndexError: index out of range in self' with a traceback
    # (on a GPU: a device-side assert).
    text = json.dumps({"name": "hf-lm", "workload": {
        "model": "nets.py:hf_lm", "model_args": {"kind": "tuple"}, "seq_len": 8, "vocab_size": 32,
        "batch_size": 4, "samples_per_epoch": 3 * 4 * 8, "precision": "fp32"}})
    (project / "job.yaml").write_text(text, encoding="utf-8")
    for command in (["validate", "job.yaml"], ["estimate", "job.yaml", "--no-baseline"]):
        res = cli.invoke(app, command)
        assert res.exit_code == 2, res.output
        assert "16 entries per token" in res.output and "workload.vocab_size is 32" in res.output, res.output
        assert len([line for line in res.output.splitlines() if line.strip()]) == 1, res.output


def test_a_language_model_whose_embedding_is_smaller_than_vocab_size_is_one_line_before_any_machine(project):
    # nets.py:small_table_lm predicts 32 tokens but embeds ids in a 16-row table; vocab_size 32 drew
    # ids up to 31, which the meta device does not check: the run died on 'IndexError: index out of
    # range in self'. The 8-row position table (called on arange) is not the ids' embedding.
    # With bert=True the 8-row position table is called on ids-shaped [batch, seq] positions and a
    # 2-row token-type table on zeros shaped like the ids: neither takes the token ids themselves.
    for rows, bert, refused in ((16, False, True), (32, False, False), (32, True, False), (16, True, True)):
        text = json.dumps({"name": "small-table", "workload": {
            "model": "nets.py:small_table_lm", "model_args": {"rows": rows, "bert": bert}, "seq_len": 8,
            "vocab_size": 32,
            "batch_size": 4, "samples_per_epoch": 3 * 4 * 8, "precision": "fp32"}})
        (project / "job.yaml").write_text(text, encoding="utf-8")
        for command in (["validate", "job.yaml"], ["estimate", "job.yaml", "--no-baseline"],
                        ["run", "job.yaml", "--provider", "local", "--dry-run"]):
            res = cli.invoke(app, command)
            if not refused:
                assert res.exit_code == 0, res.output
                continue
            assert res.exit_code == 2, res.output
            assert "tok = Embedding(16, ...)" in res.output and "workload.vocab_size is 32" in res.output, res.output
            assert "set vocab_size: 16" in res.output, res.output
            assert len([line for line in res.output.splitlines() if line.strip()]) == 1, res.output
