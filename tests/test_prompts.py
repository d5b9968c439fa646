from embedkit.prompts import FORMATS, clip_prompts, cxrclip_prompts, gloria_prompts, prompt_set

COUNTS = {"Atelectasis": 210, "Cardiomegaly": 15, "Consolidation": 192, "Edema": 18, "Effusion": 54, "Pneumothorax": 7}


def test_generators_match_the_word_lists():
    for fmt in ("gloria", "cxrclip"):
        assert {c: len(v) for c, v in prompt_set(fmt, tuple(COUNTS)).items()} == COUNTS
    assert len(clip_prompts("Edema")) == 80 and clip_prompts("Effusion")[0] == "a bad photo of a pleural effusion."


def test_documented_quirks():
    g = gloria_prompts("Effusion")  # Effusion -> Pleural Effusion; severity, location, subtype order; unstripped
    assert g[0] == " left bilateral pleural effusion" and len(set(g)) == 36
    assert "apperance of bilateral consolidation at the lower lung zone" in gloria_prompts("Consolidation")
    c = cxrclip_prompts("Consolidation")
    assert "appearance of bilateral consolidation at the lower lung zone" in c and all(p == p.strip() for p in c)
    assert "persistent pulmonary edema" in cxrclip_prompts("Edema") and "presistent pulmonary edema " in gloria_prompts("Edema")
    assert any("uppper" in p for p in c)  # the typo CXR-CLIP kept
    # Pneumothorax has no generator list: CXR-CLIP's positive report sentences
    assert gloria_prompts("Pneumothorax")[:2] == ["pneumothorax.", "there is pneumothorax."]
    assert FORMATS == ("clip", "gloria", "cxrclip")
