"""Draws the example images (public domain: made here with Pillow). Run: python examples/draw_examples.py"""

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).parent / "images"


def sunset_over_sea() -> Image.Image:
    image = Image.new("RGB", (480, 320))
    draw = ImageDraw.Draw(image)
    for y in range(200):
        draw.line([(0, y), (480, y)], fill=(250, 120 + y // 3, 60 + y // 4))
    draw.rectangle([0, 200, 480, 320], fill=(20, 60, 130))
    draw.ellipse([190, 130, 290, 230], fill=(255, 200, 40))
    for x in range(0, 480, 40):
        draw.arc([x, 230, x + 40, 250], 180, 360, fill=(200, 220, 255), width=2)
    return image


def red_house() -> Image.Image:
    image = Image.new("RGB", (400, 400), (135, 200, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 300, 400, 400], fill=(60, 160, 60))
    draw.rectangle([110, 180, 290, 320], fill=(190, 30, 30))
    draw.polygon([(90, 180), (200, 90), (310, 180)], fill=(90, 50, 30))
    draw.rectangle([180, 250, 220, 320], fill=(80, 40, 20))
    draw.rectangle([130, 210, 165, 240], fill=(250, 250, 200))
    draw.rectangle([235, 210, 270, 240], fill=(250, 250, 200))
    draw.ellipse([320, 30, 380, 90], fill=(255, 240, 120))
    return image


def traffic_light() -> Image.Image:
    image = Image.new("RGB", (240, 480), (40, 40, 40))
    draw = ImageDraw.Draw(image)
    draw.rectangle([70, 40, 170, 360], fill=(20, 20, 20), outline=(200, 200, 200), width=4)
    for i, color in enumerate([(220, 30, 30), (90, 80, 20), (40, 90, 40)]):
        draw.ellipse([90, 60 + i * 100, 150, 120 + i * 100], fill=color)
    draw.rectangle([110, 360, 130, 480], fill=(120, 120, 120))
    return image


def checkerboard() -> Image.Image:
    image = Image.new("L", (256, 256))
    draw = ImageDraw.Draw(image)
    for i in range(8):
        for j in range(8):
            if (i + j) % 2:
                draw.rectangle([i * 32, j * 32, i * 32 + 31, j * 32 + 31], fill=255)
    return image


if __name__ == "__main__":
    HERE.mkdir(exist_ok=True)
    sunset_over_sea().save(HERE / "sunset_over_sea.jpg", quality=85)
    red_house().save(HERE / "red_house.png")
    traffic_light().convert("P", palette=Image.Palette.ADAPTIVE).save(HERE / "traffic_light.gif")
    checkerboard().save(HERE / "checkerboard.png")
