"""synthetic: a desktop drawn with PIL (scene), scripted tasks on it (tasks), and the recorder writing real recordings (recorder)."""
