"""CompressedModel.display_images undoes the model's own image processor."""
import numpy as np


def test_display_images_give_back_the_pixels_the_grid_covers(tiny_model, tiny_images):
    """A 64 x 80 image: resized to 64 on its short side (a no-op) and centre-cropped to 64 x 64."""
    encoded = tiny_model.encode(tiny_images[:2], ["what colour ?", "how many shapes ?"])
    shown = tiny_model.display_images(encoded)
    assert shown.dtype == np.uint8 and shown.shape == (2, 64, 64, 3)
    assert np.array_equal(shown, np.stack(tiny_images[:2])[:, :, 8:72])  # columns 8..71: the centre crop


def test_display_images_read_the_processor_statistics(tiny_model, tiny_images, monkeypatch):
    """Grey pixels (all zeros after normalising) come back as the processor's mean, whatever it is."""
    encoded = tiny_model.encode(tiny_images[0], "what colour ?")
    encoded.pixel_values = encoded.pixel_values * 0
    processor = tiny_model.processor.image_processor
    monkeypatch.setattr(processor, "image_mean", [0.2, 0.4, 0.6])
    shown = tiny_model.display_images(encoded)
    assert (shown[0] == np.array([51, 102, 153], dtype=np.uint8)).all()
