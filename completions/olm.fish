complete --keep-order --exclusive --command olm --arguments "(COMPLETE=fish olm -- (commandline --current-process --tokenize --cut-at-cursor) (commandline --current-token))"
