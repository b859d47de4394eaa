"""Network pieces the model registry (`src.model`) assembles: same-padded convolutions, manifold mixup."""
