"""The System 1 detector: torchvision FCOS on a ResNet FPN, trained from scratch.

Design choices (measured on this project's CPU, see the README):

* one input channel (the images are black ink on white), channels-last memory;
* plain, trainable BatchNorm in the backbone (FrozenBatchNorm on random weights normalises nothing);
* a lighter FPN and head than torchvision's default (``fpn_channels`` and ``head_convs``), which
  dominate the cost at these image sizes;
* classes: ``shape`` plus ten stroke classes, one per type and style (``line/normal`` ...
  ``arc/triangle``); strokes of one type are merged across styles after the network.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.detection import FCOS
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from . import STROKE_TYPES, STYLES

SHAPE_CLASSES = ["shape"]
STROKE_CLASSES = [f"{t}/{s}" for t in STROKE_TYPES for s in STYLES]


def class_names(categories: str) -> list[str]:
    """Class names for ``--categories`` shapes, strokes or all (label ``i`` is ``names[i - 1]``)."""
    if categories == "shapes":
        return list(SHAPE_CLASSES)
    if categories == "strokes":
        return list(STROKE_CLASSES)
    if categories == "all":
        return SHAPE_CLASSES + STROKE_CLASSES
    raise ValueError(f"unknown categories {categories!r}")


@dataclass
class ModelConfig:
    backbone: str = "resnet18"
    categories: str = "all"
    image_size: int = 416
    fpn_channels: int = 128
    head_convs: int = 2
    image_mean: float = 0.9
    image_std: float = 0.25

    def to_dict(self):
        return asdict(self)


def _resnet_trunk(name: str) -> nn.Module:
    net = {"resnet18": resnet18, "resnet50": resnet50}[name](weights=None, norm_layer=nn.BatchNorm2d)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    return net


def build_model(cfg: ModelConfig) -> FCOS:
    trunk = _resnet_trunk(cfg.backbone)
    c = 512 if cfg.backbone == "resnet18" else 2048
    backbone = BackboneWithFPN(trunk, return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
                               in_channels_list=[c // 4, c // 2, c], out_channels=cfg.fpn_channels,
                               extra_blocks=LastLevelP6P7(cfg.fpn_channels, cfg.fpn_channels),
                               norm_layer=None)
    num_classes = len(class_names(cfg.categories)) + 1
    model = FCOS(backbone, num_classes=num_classes, min_size=cfg.image_size, max_size=cfg.image_size,
                 image_mean=[cfg.image_mean], image_std=[cfg.image_std], score_thresh=0.05,
                 nms_thresh=0.6, detections_per_img=100, topk_candidates=1000)
    if cfg.head_convs != 4:
        from torchvision.models.detection.fcos import FCOSHead
        model.head = FCOSHead(cfg.fpn_channels, 1, num_classes, num_convs=cfg.head_convs)
    # The regression head ends in a ReLU. With torchvision's zero bias, training from scratch with
    # AdamW kills it in the first steps (GIoU loss stuck at 1.0, measured); a bias of 1 (boxes one
    # anchor size across) keeps it alive.
    nn.init.constant_(model.head.regression_head.bbox_reg.bias, 1.0)
    # Under bf16/fp16 autocast, the head's outputs go on in fp32: box decoding, the GIoU and focal
    # losses and the centerness are computed at full precision.
    model.head.register_forward_hook(_outputs_to_float32)
    return model.to(memory_format=torch.channels_last)


def _outputs_to_float32(module, inputs, outputs):
    return {k: v.float() for k, v in outputs.items()}


def model_state(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.detach().cpu()) for k, v in model.state_dict().items())
