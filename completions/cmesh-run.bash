# bash completion for cmesh-run; install as
# /usr/share/bash-completion/completions/cmesh-run (make install does).
_cmesh_run() {
	local cur words c
	cur=${COMP_WORDS[COMP_CWORD]}
	words=("${COMP_WORDS[@]:0:COMP_CWORD}")
	local IFS=$'\n'
	# Every global option but --help takes a value: the command is the first other word.
	c=1
	while ((c < COMP_CWORD)) && [[ ${words[c]} == -* ]]; do
		[[ ${words[c]} == *=* ]] || ((c++))
		((c++))
	done
	# Queue names are the config's, which urfave/cli does not complete:
	# ask queue list, with the global options typed so far (--config).
	if [[ ${words[COMP_CWORD-1]} == --queue && (${words[c]} == schedule || ${words[c]} == list) ||
		${words[c]} == queue && (${words[c+1]} == pause || ${words[c+1]} == resume) && COMP_CWORD -eq c+2 ]]; then
		COMPREPLY=($(compgen -W "$("${words[@]:0:c}" queue list 2>/dev/null | {
			IFS=$' \t' read -r _ # the header
			while IFS=$' \t' read -r name _; do echo "$name"; done
		})" -- "$cur"))
		return
	fi
	# urfave/cli lists flags when the word before its marker starts with -.
	[[ $cur == -* ]] && words+=("$cur")
	COMPREPLY=($(compgen -W "$("${words[@]}" --generate-bash-completion 2>/dev/null)" -- "$cur"))
}
complete -o default -F _cmesh_run cmesh-run
