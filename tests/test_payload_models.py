"""payloads.models: every built-in model trains (shapes, gradients) and builds on meta."""

import sys

import pytest
import torch

from payloads.models import MODEL_NAMES, build_model

# Small inputs keep this fast on a CPU; VGG's adaptive pool makes 32x32 valid.
SIZES = {"vgg16": 32, "vgg11": 32, "resnet50": 32, "resnet18": 32, "mobilenetv2": 32, "vit_b16": 32,
         "tinycnn": 16, "mlp": 16}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward_shapes(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=2, image_size=SIZES[name])
    x = torch.randn(2, 2, SIZES[name], SIZES[name])
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.shape == p.shape for g, p in zip(grads, model.parameters()))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_builds_on_meta_device(name):
    with torch.device("meta"):
        model = build_model(name, num_classes=1000)
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000) and out.device.type == "meta"


def test_published_parameter_counts_and_flops():
    from torch.utils.flop_counter import FlopCounterMode

    # torchvision's model table (params, "GFLOPS" = multiply-adds): MobileNetV2 3,504,872 / 0.30 G,
    # ViT-B/16 86,567,656 / 17.56 G (https://pytorch.org/vision/stable/models.html)
    expected = {"vgg16": (138.36e6, 15.47e9), "resnet50": (25.56e6, 4.09e9), "resnet18": (11.69e6, 1.81e9),
                "mobilenetv2": (3_504_872, 0.30e9), "vit_b16": (86_567_656, 17.56e9)}
    for name, (params, macs) in expected.items():
        with torch.device("meta"):
            model = build_model(name, 1000)
            counter = FlopCounterMode(display=False)
            with counter:
                model(torch.randn(1, 3, 224, 224))
        assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=1e-3)
        assert counter.get_total_flops() / 2 == pytest.approx(macs, rel=0.01)


def test_unknown_model_is_a_value_error():
    with pytest.raises(ValueError, match="choose one of"):
        build_model("alexnet", 10)


def test_models_module_imports_only_torch():
    import ast
    import pathlib

    import payloads.models as m

    tree = ast.parse(pathlib.Path(m.__file__).read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert roots <= {"torch", "__future__", "factory"}  # factory: the sibling loader of user models
    import payloads.factory as f

    tree = ast.parse(pathlib.Path(f.__file__).read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    # the loader runs on the rented machine beside torch alone: the standard library and torch only
    assert roots - set(sys.stdlib_module_names) <= {"torch"}, roots
