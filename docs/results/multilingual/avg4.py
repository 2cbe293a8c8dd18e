"""avg3 (epoch ends 565, 678, 791) and last1 (872) -> the mean of the last 4 (weights 3:1)."""
import json, sys
from pathlib import Path
from nmt.bundle import load_bundle, save_bundle
a, b = load_bundle('/work/gpu2/ft-avg3'), load_bundle('/work/gpu2/ft-last1')
ma, mb = a.load_model(), b.load_model()
sa, sb = ma.state_dict(), mb.state_dict()
ma.load_state_dict({k: (3 * sa[k].float() + sb[k].float()) / 4 for k in sa})
meta = json.loads((a.path / 'bundle.json').read_text())
keep = {k: meta[k] for k in ('name', 'directions', 'language_tokens', 'training')}
keep['training']['averaged'] = ['step-00000565.pt', 'step-00000678.pt', 'step-00000791.pt', 'step-00000872.pt']
print(save_bundle(Path(sys.argv[1]), ma, a.model_config, a.src_tokenizer, a.tgt_tokenizer, a.search, keep, dtype='float16'))
