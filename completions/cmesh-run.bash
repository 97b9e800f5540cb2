# bash completion for cmesh-run; install as
# /usr/share/bash-completion/completions/cmesh-run (make install does).
_cmesh_run() {
	local cur words
	cur=${COMP_WORDS[COMP_CWORD]}
	words=("${COMP_WORDS[@]:0:COMP_CWORD}")
	# urfave/cli lists flags when the word before its marker starts with -.
	[[ $cur == -* ]] && words+=("$cur")
	local IFS=$'\n'
	COMPREPLY=($(compgen -W "$("${words[@]}" --generate-bash-completion 2>/dev/null)" -- "$cur"))
}
complete -o default -F _cmesh_run cmesh-run
