#!/usr/bin/env bash
# Sets up larc on a Debian 12 machine: a virtual environment in .venv with the CPU build of torch
# and every Python dependency from pyproject.toml, and (with --dev) the Debian packages and Python
# tools that the test suite needs. Safe to run again: it only installs what is missing.
#
#   bash deploy/setup.sh          # runtime only
#   bash deploy/setup.sh --dev    # runtime + test tools + redis-server, orthanc, orthanc-dicomweb,
#                                 # dcmtk, dicom3tools, chromium, pixelmed-apps (the TID 1500
#                                 # validator), and the OHIF viewer (npm @ohif/app) in .ohif/
#
# Environment: PYTHON (interpreter for the venv, default python3), LARC_VENV (default .venv),
# LARC_TORCH_SPEC (default torch==2.13.0, the CPU wheel; set e.g. "torch" for a CUDA build).
set -euo pipefail

cd "$(dirname "$0")/.."
dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (use --dev or --help)" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
venv=${LARC_VENV:-.venv}
torch_spec=${LARC_TORCH_SPEC:-torch==2.13.0}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@";
  else echo "setup.sh: need root (or sudo) to run: $*" >&2; exit 1; fi
}

if [ "$dev" -eq 1 ]; then
  # command -> Debian package that provides it
  missing=()
  for pair in redis-server:redis-server Orthanc:orthanc storescu:dcmtk dciodvfy:dicom3tools \
              chromium:chromium DicomSRValidator:pixelmed-apps; do
    cmd=${pair%%:*}; pkg=${pair##*:}
    if ! command -v "$cmd" >/dev/null && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/usr/bin/$cmd" ]; then
      missing+=("$pkg")
    fi
  done
  [ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup.sh: installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The Debian packages start their own services; tests start private instances instead.
    for svc in orthanc redis-server; do
      if command -v systemctl >/dev/null; then as_root systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
      as_root service "$svc" stop >/dev/null 2>&1 || true
    done
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "setup.sh: creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
# This machine kind's pip config names local indexes that are not all there; pip warns for each.
pip_install() { "${pip[@]}" install "$@" 2> >(grep -v '^WARNING: Location .* is ignored' >&2); }

extras=""; [ "$dev" -eq 1 ] && extras="[dev]"
stamp="$venv/.larc-installed"
want=$(cat pyproject.toml deploy/constraints-cpu.txt | sha256sum | cut -c1-16)"$extras$torch_spec"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # torch first, alone, so that pip takes the CPU wheel instead of resolving a CUDA build.
  if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "setup.sh: installing $torch_spec"
    pip_install "$torch_spec"
  fi
  echo "setup.sh: installing larc$extras and its dependencies"
  constraints=()
  [ "$torch_spec" = "torch==2.13.0" ] && constraints=(-c deploy/constraints-cpu.txt)
  pip_install "${constraints[@]}" -e ".$extras"
  echo "$want" > "$stamp"
fi
if [ "$dev" -eq 1 ]; then
  # The OHIF viewer's built dist/ (npm @ohif/app), served by `larc harness --viewer` and the
  # viewer test against Orthanc's DICOMweb. Only the package's own tarball: no dependencies.
  ohif_version=3.13.2
  if [ ! -f ".ohif/$ohif_version/dist/index.html" ]; then
    echo "setup.sh: fetching the OHIF viewer (@ohif/app@$ohif_version)"
    rm -rf .ohif && mkdir -p ".ohif/$ohif_version"
    (cd .ohif && npm pack --silent "@ohif/app@$ohif_version" >/dev/null)
    tar -xzf ".ohif/ohif-app-$ohif_version.tgz" -C ".ohif/$ohif_version" --strip-components=1 package/dist
    rm ".ohif/ohif-app-$ohif_version.tgz"
  fi
fi
echo "setup.sh: ready ($("$venv/bin/larc" --version))"
