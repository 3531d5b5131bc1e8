#!/usr/bin/env bash
# Sourced by every HTCondor job of hepflows before law runs its branches (law renders the {{...}} variables at
# submission). The project and the store live on a shared file system: the job activates the project's
# environment and writes straight into the store.
# The rendered values arrive already shell-quoted (workflow/base.py: bootstrap_render_variables), so they stand
# unquoted here: a path with spaces, quotes or $ is taken literally, never expanded or executed.

hepflows_bootstrap() {
    local hepflows_repo
    hepflows_repo={{hepflows_repo}}
    export HEPFLOWS_STORE={{hepflows_store}}
    export HEPFLOWS_SKIP_INDEX=1
    source "${hepflows_repo}/setup.sh" || return "$?"
    # the submitter's law home (index), set after setup.sh, which points it into the repository by default
    export LAW_HOME={{law_home}}
}
hepflows_bootstrap
