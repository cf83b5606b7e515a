"""Model code: the native Phi-3(.5)-vision architecture, presets, tokenizers and loading."""
