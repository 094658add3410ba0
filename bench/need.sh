# Sourced by the reproduce_*.sh scripts: `need FILE` returns when FILE exists, else prints one
# line naming it and how to get it (the URL assets.tsv lists for it) and exits 2.
need() {
  [ -e "$1" ] && return 0
  local url
  url=$(awk -F'\t' -v f="$1" '$1 == f { split($4, u, " "); print u[1] }' assets.tsv)
  if [ -n "$url" ]; then
    echo "error: $1 not found: \`bash setup.sh\` fetches it (or: curl -fL -o $1 $url); a quick CPU run on the bundled stories260K: see the header of $0" >&2
  else
    echo "error: $1 not found (see the header of $0 for what this bench needs)" >&2
  fi
  exit 2
}
