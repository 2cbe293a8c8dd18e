"""The CTranslate2 export's format on disk: what `nmt.export.ctranslate2` writes and
`nmt.backends.ctranslate2` reads (BUNDLE/ct2/: CTranslate2's own model directory plus
export.json, with this format number and the bundle's version)."""

EXPORT_DIR = "ct2"  # inside the bundle folder
EXPORT_FILE = "export.json"
EXPORT_FORMAT = 1
