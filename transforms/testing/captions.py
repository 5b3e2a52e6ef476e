"""Captions of every length that matters to LongCLIP: under 20 tokens, around 77, up to 248, and over it."""

CAPTIONS = {
    "short": "a photo of a cat",
    "html_and_space": "  Two   dogs &amp; a\tball\non the grass ",
    "just_over_20_tokens": (
        "a small wooden boat with a white sail floats on a calm lake at dawn while birds fly above the trees"
    ),
    "around_77_tokens": " ".join(["a red kite flies high over the green hills near the old stone bridge"] * 5),
    "long_200_tokens": " ".join(f"detail number {i} is a bright blue square." for i in range(25)),
    "over_248_tokens": " ".join(
        f"sentence {i} describes yet another object in the busy market scene." for i in range(40)
    ),
    "unicode": "Ein Café in Zürich — 东京的夜景 🙂 naïve façade",
}
