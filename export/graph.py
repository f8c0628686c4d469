"""The served graph: uint8 NHWC pixels in; logits, pooled embedding and last feature map out."""

from pathlib import Path

import onnx
import torch
from torch import nn

INPUT = "pixels"
OUTPUTS = ("logits", "embedding", "features")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ServingGraph(nn.Module):
    """Cast, transpose and normalise inside the graph, then one forward pass for all three outputs."""

    def __init__(self, model: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("scale", 1 / (255 * torch.tensor(std).view(1, 3, 1, 1)))
        self.register_buffer("shift", torch.tensor(mean).view(1, 3, 1, 1) / torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = pixels.permute(0, 3, 1, 2).float() * self.scale - self.shift  # (B, 3, H, W)
        features = self.model.forward_features(x)  # (B, C, H/s, W/s)
        embedding = features.mean((2, 3))  # (B, C)
        return self.model.get_classifier()(embedding), embedding, features


def export_onnx(model: nn.Module, path: Path, *, opset: int = 18, example_size: int = 64) -> onnx.ModelProto:
    """Export with dynamic batch, height and width to a single file, checked with the full checker."""
    graph = ServingGraph(model).eval()
    size = max(example_size, 2 * model.min_input_size)
    example = torch.randint(0, 256, (2, size, size + model.min_input_size, 3), dtype=torch.uint8)
    dims = {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC}
    program = torch.onnx.export(
        graph,
        (example,),
        dynamo=True,
        input_names=[INPUT],
        output_names=list(OUTPUTS),
        dynamic_shapes={"pixels": dims},
        opset_version=opset,
        external_data=False,
        optimize=True,
        verbose=False,
    )
    program.save(str(path), external_data=False)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    return proto
