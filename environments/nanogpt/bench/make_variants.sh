#!/usr/bin/env bash
# Builds the folders bench/catalog_check.sh runs: one copy of the environment per catalog idea
# (its diff applied with git apply) and two cheats the causality probe must void.
#   bash bench/make_variants.sh DEST
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=$1
rm -rf "$DEST"; mkdir -p "$DEST"
copy() { mkdir -p "$DEST/$1"; cp train.py prepare_data.py environment.toml "$DEST/$1/"; }
for diff in catalog/*.diff; do
  name=$(basename "$diff" .diff)
  copy "$name"
  (cd "$DEST/$name" && git apply "$OLDPWD/$diff")
done
# Cheats: the next token's embedding added to the input, and attention that sees the future.
copy cheat_next_token
sed -i 's/x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))$/& + self.wte(idx.roll(-1, dims=1))/' \
  "$DEST/cheat_next_token/train.py"
copy cheat_non_causal
sed -i 's/F.scaled_dot_product_attention(q, k, v, is_causal=True)/F.scaled_dot_product_attention(q, k, v, is_causal=False)/' \
  "$DEST/cheat_non_causal/train.py"
for cheat in cheat_next_token cheat_non_causal; do
  cmp -s train.py "$DEST/$cheat/train.py" && { echo "$cheat: pattern not found" >&2; exit 1; }
done
ls "$DEST"
