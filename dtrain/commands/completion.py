"""Bash completion of `key=value` words (zsh and fish get the same words from click's scripts).

click's bash script hands Python bash's own words, and bash splits a word at `=` and `:`
(COMP_WORDBREAKS): `data.loader=to` arrives as `data.loader`, `=`, `to`, so the value could not
be completed, and after `optim.lr=` bash added a space. This script sends the line up to the
cursor instead (one word per shell word), gets whole words back (`data.loader=torch`), and gives
bash only what follows the word's last break character, the text readline replaces (`torch`
after `data.loader=`); a completion ending in `=` or `.` (a key, a section) gets no space.
Registered for "bash" in place of click's (dtrain/cli.py).
"""

from __future__ import annotations

import os

from click.shell_completion import BashComplete, CompletionItem, split_arg_string

# click's bash script with two changes: the line up to the cursor and COMP_WORDBREAKS go to
# Python, and items of type `nospace` are added with `compopt -o nospace`.
SOURCE_BASH = """\
%(complete_func)s() {
    local IFS=$'\\n'
    local response

    response=$(env COMP_LINE_BEFORE="${COMP_LINE:0:$COMP_POINT}" COMP_WORDBREAKS="$COMP_WORDBREAKS" \
%(complete_var)s=bash_complete $1)

    for completion in $response; do
        IFS=',' read type value <<< "$completion"

        if [[ $type == 'dir' ]]; then
            COMPREPLY=()
            compopt -o dirnames
        elif [[ $type == 'file' ]]; then
            COMPREPLY=()
            compopt -o default
        elif [[ $type == 'plain' ]]; then
            COMPREPLY+=("$value")
        elif [[ $type == 'nospace' ]]; then
            COMPREPLY+=("$value")
            compopt -o nospace
        fi
    done

    return 0
}

%(complete_func)s_setup() {
    complete -o nosort -F %(complete_func)s %(prog_name)s
}

%(complete_func)s_setup;
"""
OPEN_ENDINGS = ("=", ".")  # a key waiting for its value, a section waiting for its key


class KeyValueBashComplete(BashComplete):
    """click's BashComplete, with `key=value` kept as one word."""

    source_template = SOURCE_BASH

    def get_completion_args(self) -> tuple[list[str], str]:
        line = os.environ.get("COMP_LINE_BEFORE")
        if line is None:  # a script sourced from an older dtrain: click's own protocol
            return super().get_completion_args()
        words = split_arg_string(line)
        incomplete = words.pop() if words and line and not line[-1].isspace() else ""
        self.typed = incomplete
        return words[1:], incomplete

    def format_completion(self, item: CompletionItem) -> str:
        value = str(item.value)
        typed = getattr(self, "typed", "")
        # Readline replaces the text after the word's last break character: `to` of
        # `data.loader=to`, nothing right after the `=`, `5` of `image=reg:5`.
        kept = max((typed.rfind(c) for c in os.environ.get("COMP_WORDBREAKS", "=:")), default=-1) + 1
        if kept > 0 and value.startswith(typed[:kept]):
            value = value[kept:]
        kind = "nospace" if item.type == "plain" and str(item.value).endswith(OPEN_ENDINGS) else item.type
        return f"{kind},{value}"
