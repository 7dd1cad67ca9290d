"""The whisper-cross kind (the embedded default): Whisper tiny.en read from its CTranslate2
files, its streaming encoder and cross-attention decoder, recipes and their trainer Kind."""
