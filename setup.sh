# hepflows environment set-up. Source it, from any directory, in bash or zsh:
#
#   source setup.sh
#
# On a fresh checkout it creates .venv/ in the repository root and installs the project (editable) with its
# dev extra; afterwards it only activates the environment (seconds). It exports what law needs and runs
# `law index`. Variables you may set beforehand:
#   HEPFLOWS_STORE        where all task outputs go            (default: <repo>/data/store)
#   HEPFLOWS_PYTHON       interpreter used to create .venv     (default: python3)
#   HEPFLOWS_TORCH_SPEC   torch requirement installed first    (default: torch==2.13.0, a CPU build;
#                         e.g. "torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124" for CUDA,
#                         or "" to let pip choose)
#   HEPFLOWS_EXTRAS       optional extras installed beside dev (default: none; e.g. "pythia" for Pythia 8 and
#                         FastJet, needed by samples with source: pythia8)
#   HEPFLOWS_REINSTALL=1  force the installation step again
#   HEPFLOWS_SKIP_INDEX=1 do not rerun `law index` (HTCondor jobs reuse the submitter's index)

if [ -n "${BASH_SOURCE:-}" ]; then
    _hf_src="${BASH_SOURCE[0]}"
elif [ -n "${ZSH_VERSION:-}" ]; then
    eval '_hf_src="${(%):-%x}"'
else
    _hf_src="$0"
fi
export HEPFLOWS_BASE="$(cd "$(dirname "${_hf_src}")" && pwd)"
unset _hf_src

_hf_setup() {
    local base="${HEPFLOWS_BASE}"
    local venv="${base}/.venv"
    local py="${HEPFLOWS_PYTHON:-python3}"
    local torch_spec="${HEPFLOWS_TORCH_SPEC-torch==2.13.0}"
    # extras accumulate: those installed before stay, so a later plain `source setup.sh` (or an HTCondor job)
    # never reinstalls
    local extras_stamp="${venv}/.hepflows-extras"
    local have_extras=""
    [ -f "${extras_stamp}" ] && have_extras="$(cat "${extras_stamp}")"
    local extras="dev" e
    for e in $(printf '%s' "${have_extras},${HEPFLOWS_EXTRAS:-}" | tr ',' ' '); do
        case ",${extras}," in *",${e},"*) ;; *) extras="${extras},${e}" ;; esac
    done

    if [ ! -x "${venv}/bin/python" ]; then
        echo "hepflows: creating ${venv}"
        "${py}" -m venv "${venv}" || { echo "hepflows: could not create the virtual environment" >&2; return 1; }
    fi
    # shellcheck disable=SC1091
    . "${venv}/bin/activate" || return 1

    # re-install only when the project metadata changed (or on request)
    local stamp="${venv}/.hepflows-installed"
    local want
    want="$(cat "${base}/pyproject.toml" | cksum | cut -d' ' -f1)-${torch_spec}"
    if [ "${HEPFLOWS_REINSTALL:-0}" = "1" ] || [ ! -f "${stamp}" ] || [ "$(cat "${stamp}")" != "${want}" ] \
            || [ "${extras}" != "${have_extras:-dev}" ]; then
        echo "hepflows: installing the project into ${venv} (a few minutes on a fresh machine)"
        local log="${venv}/install.log"
        : > "${log}"
        python -m pip install --upgrade pip >>"${log}" 2>&1
        if [ -n "${torch_spec}" ]; then
            # shellcheck disable=SC2086
            python -m pip install ${torch_spec} >>"${log}" 2>&1 \
                || { tail -n 30 "${log}" >&2; echo "hepflows: installing '${torch_spec}' failed (log: ${log})" >&2; return 1; }
        fi
        python -m pip install -e "${base}[${extras}]" >>"${log}" 2>&1 \
            || { tail -n 30 "${log}" >&2; echo "hepflows: pip install failed (log: ${log})" >&2; return 1; }
        printf '%s' "${want}" > "${stamp}"
        printf '%s' "${extras}" > "${extras_stamp}"
    fi

    export LAW_HOME="${base}/.law"
    export LAW_CONFIG_FILE="${base}/law.cfg"
    export HEPFLOWS_STORE="${HEPFLOWS_STORE:-${base}/data/store}"
    export MPLBACKEND="${MPLBACKEND:-Agg}"
    mkdir -p "${HEPFLOWS_STORE}" "${LAW_HOME}"

    if [ "${HEPFLOWS_SKIP_INDEX:-0}" != "1" ]; then
        law index -q || { echo "hepflows: law index failed" >&2; return 1; }
    fi
    echo "hepflows: ready (store: ${HEPFLOWS_STORE})"
}

_hf_setup
_hf_status=$?
unset -f _hf_setup
return ${_hf_status} 2>/dev/null || exit ${_hf_status}
