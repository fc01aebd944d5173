"""Which pretrained weights each nest_jax model can start from: timm's Hugging Face Hub releases and
Google's GCS files, with what their `pretrained_cfg` says about them.

TIMM: nest_jax name -> (timm architecture, {tag: (num_classes, input size, (mean, std))}); the hub
id is `timm/<architecture>.<tag>` and the first tag is timm's default. GCS: nest_jax name ->
{tag: (gs:// URL, num_classes, input size, (mean, std))} for Google's own releases (ViT `.npz`,
official NesT folders). Both are copied from timm's `pretrained_cfg`s (and the NesT README) and
checked against them by tests/test_hub.py, so they cannot drift.
"""

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # timm IMAGENET_DEFAULT_MEAN/STD
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm IMAGENET_INCEPTION_MEAN/STD: inputs in [-1, 1]
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))  # OpenAI CLIP

# nest_jax name -> {tag: (num_classes, input size, (mean, std))}, timm's default tag first.
_TIMM_TAGS = {
    "deit_base_distilled_patch16_224": {"fb_in1k": (1000, 224, IMAGENET)},
    "deit_base_patch16_224": {"fb_in1k": (1000, 224, IMAGENET)},
    "deit_small_distilled_patch16_224": {"fb_in1k": (1000, 224, IMAGENET)},
    "deit_small_patch16_224": {"fb_in1k": (1000, 224, IMAGENET)},
    "deit_tiny_distilled_patch16_224": {"fb_in1k": (1000, 224, IMAGENET)},
    "deit_tiny_patch16_224": {"fb_in1k": (1000, 224, IMAGENET)},
    "nest_base": {"goog_in1k": (1000, 224, IMAGENET)},
    "nest_small": {"goog_in1k": (1000, 224, IMAGENET)},
    "nest_tiny": {"goog_in1k": (1000, 224, IMAGENET)},
    "resnet50": {
        "a1_in1k": (1000, 224, IMAGENET),
        "a1h_in1k": (1000, 176, IMAGENET),
        "a2_in1k": (1000, 224, IMAGENET),
        "a3_in1k": (1000, 160, IMAGENET),
        "b1k_in1k": (1000, 224, IMAGENET),
        "b2k_in1k": (1000, 224, IMAGENET),
        "c1_in1k": (1000, 224, IMAGENET),
        "c2_in1k": (1000, 224, IMAGENET),
        "d_in1k": (1000, 224, IMAGENET),
        "ram_in1k": (1000, 224, IMAGENET),
        "am_in1k": (1000, 224, IMAGENET),
        "ra_in1k": (1000, 224, IMAGENET),
        "bt_in1k": (1000, 224, IMAGENET),
        "tv_in1k": (1000, 224, IMAGENET),
        "tv2_in1k": (1000, 176, IMAGENET),
        "bamboo": (0, 224, IMAGENET),
        "fb_ssl_yfcc100m_ft_in1k": (1000, 224, IMAGENET),
        "fb_swsl_ig1b_ft_in1k": (1000, 224, IMAGENET),
        "gluon_in1k": (1000, 224, IMAGENET),
    },
    "resnetv2_50x1_bit": {
        "goog_distilled_in1k": (1000, 224, INCEPTION),
        "goog_in21k_ft_in1k": (1000, 448, INCEPTION),
        "goog_in21k": (21843, 224, INCEPTION),
    },
    "vit_base_patch16_224": {
        "augreg2_in21k_ft_in1k": (1000, 224, INCEPTION),
        "augreg_in21k_ft_in1k": (1000, 224, INCEPTION),
        "orig_in21k_ft_in1k": (1000, 224, INCEPTION),
        "augreg_in1k": (1000, 224, INCEPTION),
        "orig_in21k": (0, 224, INCEPTION),
        "augreg_in21k": (21843, 224, INCEPTION),
        "sam_in1k": (1000, 224, INCEPTION),
        "bamboo": (115217, 224, CLIP),
        "dino": (0, 224, IMAGENET),
        "mae": (0, 224, IMAGENET),
    },
    "vit_base_patch32_224": {
        "augreg_in21k_ft_in1k": (1000, 224, INCEPTION),
        "augreg_in1k": (1000, 224, INCEPTION),
        "orig_in21k": (0, 224, INCEPTION),
        "augreg_in21k": (21843, 224, INCEPTION),
        "sam_in1k": (1000, 224, INCEPTION),
    },
    "vit_base_patch8_224": {
        "augreg2_in21k_ft_in1k": (1000, 224, INCEPTION),
        "augreg_in21k_ft_in1k": (1000, 224, INCEPTION),
        "augreg_in21k": (21843, 224, INCEPTION),
        "dino": (0, 224, IMAGENET),
    },
    "vit_base_r50_s16_224": {"orig_in21k": (0, 224, INCEPTION)},
    "vit_huge_patch14_224": {"orig_in21k": (0, 224, INCEPTION), "mae": (0, 224, IMAGENET)},
    "vit_large_patch16_224": {
        "augreg_in21k_ft_in1k": (1000, 224, INCEPTION),
        "orig_in21k": (0, 224, INCEPTION),
        "augreg_in21k": (21843, 224, INCEPTION),
        "mae": (0, 224, IMAGENET),
    },
    "vit_large_patch32_224": {"orig_in21k": (0, 224, INCEPTION)},
    "vit_small_patch16_224": {
        "augreg_in21k_ft_in1k": (1000, 224, INCEPTION),
        "augreg_in1k": (1000, 224, INCEPTION),
        "augreg_in21k": (21843, 224, INCEPTION),
        "dino": (0, 224, IMAGENET),
    },
    "vit_small_patch32_224": {"augreg_in21k_ft_in1k": (1000, 224, INCEPTION), "augreg_in21k": (21843, 224, INCEPTION)},
    "vit_tiny_patch16_224": {"augreg_in21k_ft_in1k": (1000, 224, INCEPTION), "augreg_in21k": (21843, 224, INCEPTION)},
}
# timm's architecture is the nest_jax name, except NesT's: the Google-ported weights are `nest_*_jx`.
TIMM = {name: (f"{name}_jx" if name.startswith("nest_") else name, tags) for name, tags in _TIMM_TAGS.items()}


def _augreg(model: str, i21k: str, ft_lr: str, i1k: str = "", sam: bool = False) -> dict:
    """Google's AugReg ViTs (Steiner et al., "How to train your ViT?", 2021) under
    gs://vit_models/augreg/, named `<model>-<data>-300ep-lr_0.001-<regularization>`: the
    ImageNet-21k run, its ImageNet-1k fine-tune (at `ft_lr`, 224 px), the ImageNet-1k run where
    released (fine-tuned at lr 0.01), and where released the SAM ViT of gs://vit_models/sam/."""
    run = f"gs://vit_models/augreg/{model}-{{}}-300ep-lr_0.001-{{}}"
    ft = "--imagenet2012-steps_20k-lr_{}-res_224.npz"
    out = {"gcs_augreg_in21k_ft_in1k": (run.format("i21k", i21k) + ft.format(ft_lr), 1000, 224, INCEPTION)}
    if i1k:
        out["gcs_augreg_in1k"] = (run.format("i1k", i1k) + ft.format("0.01"), 1000, 224, INCEPTION)
    out["gcs_augreg_in21k"] = (run.format("i21k", i21k) + ".npz", 21843, 224, INCEPTION)
    if sam:
        out["gcs_sam_in1k"] = (f"gs://vit_models/sam/ViT-{model}.npz", 1000, 224, INCEPTION)
    return out


_NEST = "gs://gresearch/nest-checkpoints/nest-{}_imagenet"
GCS = {
    "vit_base_patch16_224": _augreg(
        "B_16", "aug_medium1-wd_0.1-do_0.0-sd_0.0", "0.01", "aug_strong2-wd_0.1-do_0.1-sd_0.1", sam=True
    ),
    "vit_base_patch32_224": _augreg(
        "B_32", "aug_medium1-wd_0.03-do_0.0-sd_0.0", "0.03", "aug_medium2-wd_0.1-do_0.1-sd_0.1", sam=True
    ),
    "vit_base_patch8_224": _augreg("B_8", "aug_medium1-wd_0.1-do_0.0-sd_0.0", "0.01"),
    "vit_large_patch16_224": _augreg("L_16", "aug_medium1-wd_0.1-do_0.1-sd_0.1", "0.01"),
    "vit_small_patch16_224": _augreg(
        "S_16", "aug_light1-wd_0.03-do_0.0-sd_0.0", "0.03", "aug_medium2-wd_0.1-do_0.0-sd_0.0"
    ),
    "vit_small_patch32_224": _augreg("S_32", "aug_light1-wd_0.03-do_0.0-sd_0.0", "0.03"),
    "vit_tiny_patch16_224": _augreg("Ti_16", "aug_none-wd_0.03-do_0.0-sd_0.0", "0.03"),
    "nest_tiny": {"gcs_goog_in1k": (_NEST.format("t"), 1000, 224, IMAGENET)},
    "nest_small": {"gcs_goog_in1k": (_NEST.format("s"), 1000, 224, IMAGENET)},
    "nest_base": {"gcs_goog_in1k": (_NEST.format("b"), 1000, 224, IMAGENET)},
}
