"""Shared `config.dataset` builder for the data tests (a plain ConfigDict, as configs/ make)."""
import ml_collections


def dataset_config(name="digits", **overrides) -> ml_collections.ConfigDict:
    augment = dict(inception_crop=False, min_area=0.08, flip=False, cifar_crop=False,
                   crop_padding=2, randaugment=dict(layers=0, magnitude=9.0, magnitude_std=0.5,
                                                    prob=0.5),
                   color_jitter=0.0, random_erasing=0.0)
    augment.update(overrides.pop("augment", {}))
    cfg = dict(name=name, data_dir=None, train_split="train", eval_split="test", image_size=8,
               num_channels=1, normalize="digits", shuffle_buffer=1000, repeated_aug=1,
               cache=False, augment=augment, eval_resize="resize", crop_fraction=0.875,
               resize_method="bilinear")
    cfg.update(overrides)
    return ml_collections.ConfigDict(cfg)


FULL_AUGMENT = dict(flip=True, cifar_crop=True, color_jitter=0.3, random_erasing=0.25,
                    randaugment=dict(layers=2, magnitude=9.0, magnitude_std=0.5, prob=0.5))
