# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_olm_global_optspecs
    string join \n h/help V/version
end

function __fish_olm_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_olm_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_olm_using_subcommand
    set -l cmd (__fish_olm_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c olm -n "__fish_olm_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c olm -n "__fish_olm_needs_command" -s V -l version -d 'Print version'
complete -c olm -n "__fish_olm_needs_command" -f -a "run" -d 'Generate an answer to a prompt and stream it to stdout'
complete -c olm -n "__fish_olm_needs_command" -f -a "chat" -d 'Chat with a model in the terminal'
complete -c olm -n "__fish_olm_needs_command" -f -a "bench" -d 'Measure prompt and generation speed, llama-bench style'
complete -c olm -n "__fish_olm_needs_command" -f -a "pull" -d 'Download a model into the store, or register a local .gguf file'
complete -c olm -n "__fish_olm_needs_command" -f -a "list" -d 'List the models in the store and GGUF files already in the Hugging Face cache'
complete -c olm -n "__fish_olm_needs_command" -f -a "ls" -d 'List the models in the store and GGUF files already in the Hugging Face cache'
complete -c olm -n "__fish_olm_needs_command" -f -a "show" -d 'Show a model\'s metadata: architecture, parameters, quant, context, template, license, files'
complete -c olm -n "__fish_olm_needs_command" -f -a "rm" -d 'Remove models from the store (and their files, unless another name uses them)'
complete -c olm -n "__fish_olm_needs_command" -f -a "verify" -d 'Re-hash stored files against their manifests; exit 1 if any changed'
complete -c olm -n "__fish_olm_needs_command" -f -a "serve" -d 'Serve the OpenAI- and Ollama-compatible HTTP API'
complete -c olm -n "__fish_olm_needs_command" -f -a "completions" -d 'Print a shell completion script to stdout'
complete -c olm -n "__fish_olm_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c olm -n "__fish_olm_using_subcommand run" -s s -l system -d 'System prompt: instructions that frame the conversation' -r
complete -c olm -n "__fish_olm_using_subcommand run" -l temperature -d 'Sampling temperature; 0 picks the most likely token every time (greedy)' -r
complete -c olm -n "__fish_olm_using_subcommand run" -l top-k -d 'Sample only from the K most likely tokens (0 disables)' -r
complete -c olm -n "__fish_olm_using_subcommand run" -l top-p -d 'Nucleus sampling: keep the smallest set of tokens whose probability reaches P (1.0 disables)' -r
complete -c olm -n "__fish_olm_using_subcommand run" -l min-p -d 'Drop tokens less likely than P times the most likely one (0 disables)' -r
complete -c olm -n "__fish_olm_using_subcommand run" -l repeat-penalty -d 'Penalize tokens repeated in the last 64 tokens (1.0 disables)' -r
complete -c olm -n "__fish_olm_using_subcommand run" -l seed -d 'Random seed; the same seed, model and prompt give the same answer' -r
complete -c olm -n "__fish_olm_using_subcommand run" -s n -l max-tokens -d 'Stop after generating N tokens' -r
complete -c olm -n "__fish_olm_using_subcommand run" -s c -l ctx-size -d 'Context size in tokens (prompt plus answer)' -r
complete -c olm -n "__fish_olm_using_subcommand run" -s t -l threads -d 'CPU threads for generation [default: physical cores]' -r
complete -c olm -n "__fish_olm_using_subcommand run" -l gpu-layers -d 'Number of layers to offload to the GPU (when olm is built with a GPU backend)' -r
complete -c olm -n "__fish_olm_using_subcommand run" -l format -d 'Constrain the output to a format: `json` makes the model answer with a JSON object' -r -f -a "json\t'A JSON object'"
complete -c olm -n "__fish_olm_using_subcommand run" -l schema -d 'Constrain the output to match a JSON schema read from FILE' -r -F
complete -c olm -n "__fish_olm_using_subcommand run" -l chat-template -d 'Chat template to use instead of the model\'s own: a Jinja file, or a llama.cpp built-in name (chatml, llama3, gemma, mistral-v7, phi4, ...)' -r
complete -c olm -n "__fish_olm_using_subcommand run" -l raw -d 'Send the prompt to the model as is, without the chat template'
complete -c olm -n "__fish_olm_using_subcommand run" -l verbose-prompt -d 'Print the prompt as the model sees it (after the chat template) to stderr'
complete -c olm -n "__fish_olm_using_subcommand run" -l json -d 'Print one JSON object with the text and statistics instead of streaming text'
complete -c olm -n "__fish_olm_using_subcommand run" -l verbose -d 'Show llama.cpp\'s own log lines on stderr'
complete -c olm -n "__fish_olm_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c olm -n "__fish_olm_using_subcommand run" -s V -l version -d 'Print version'
complete -c olm -n "__fish_olm_using_subcommand chat" -s s -l system -d 'System prompt: instructions that frame the conversation' -r
complete -c olm -n "__fish_olm_using_subcommand chat" -l temperature -d 'Sampling temperature; 0 picks the most likely token every time (greedy)' -r
complete -c olm -n "__fish_olm_using_subcommand chat" -l top-k -d 'Sample only from the K most likely tokens (0 disables)' -r
complete -c olm -n "__fish_olm_using_subcommand chat" -l top-p -d 'Nucleus sampling: keep the smallest set of tokens whose probability reaches P (1.0 disables)' -r
complete -c olm -n "__fish_olm_using_subcommand chat" -l min-p -d 'Drop tokens less likely than P times the most likely one (0 disables)' -r
complete -c olm -n "__fish_olm_using_subcommand chat" -l repeat-penalty -d 'Penalize tokens repeated in the last 64 tokens (1.0 disables)' -r
complete -c olm -n "__fish_olm_using_subcommand chat" -l seed -d 'Random seed; the same seed, model and prompt give the same answer' -r
complete -c olm -n "__fish_olm_using_subcommand chat" -s n -l max-tokens -d 'Stop after generating N tokens' -r
complete -c olm -n "__fish_olm_using_subcommand chat" -s c -l ctx-size -d 'Context size in tokens (prompt plus answer)' -r
complete -c olm -n "__fish_olm_using_subcommand chat" -s t -l threads -d 'CPU threads for generation [default: physical cores]' -r
complete -c olm -n "__fish_olm_using_subcommand chat" -l gpu-layers -d 'Number of layers to offload to the GPU (when olm is built with a GPU backend)' -r
complete -c olm -n "__fish_olm_using_subcommand chat" -l format -d 'Constrain the output to a format: `json` makes the model answer with a JSON object' -r -f -a "json\t'A JSON object'"
complete -c olm -n "__fish_olm_using_subcommand chat" -l schema -d 'Constrain the output to match a JSON schema read from FILE' -r -F
complete -c olm -n "__fish_olm_using_subcommand chat" -l chat-template -d 'Chat template to use instead of the model\'s own: a Jinja file, or a llama.cpp built-in name (chatml, llama3, gemma, mistral-v7, phi4, ...)' -r
complete -c olm -n "__fish_olm_using_subcommand chat" -l verbose -d 'Show llama.cpp\'s own log lines on stderr'
complete -c olm -n "__fish_olm_using_subcommand chat" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c olm -n "__fish_olm_using_subcommand chat" -s V -l version -d 'Print version'
complete -c olm -n "__fish_olm_using_subcommand bench" -s p -l n-prompt -d 'Prompt sizes to test (ppN); 0 skips prompt tests' -r
complete -c olm -n "__fish_olm_using_subcommand bench" -s n -l n-gen -d 'Generation lengths to test (tgN); 0 skips generation tests' -r
complete -c olm -n "__fish_olm_using_subcommand bench" -s r -l repetitions -d 'Repetitions of each test' -r
complete -c olm -n "__fish_olm_using_subcommand bench" -s t -l threads -d 'CPU threads [default: physical cores]' -r
complete -c olm -n "__fish_olm_using_subcommand bench" -s b -l batch-size -d 'Logical batch sizes: prompt tokens per llama.cpp call' -r
complete -c olm -n "__fish_olm_using_subcommand bench" -l ubatch-size -l ub -d 'Physical batch sizes: tokens per compute step' -r
complete -c olm -n "__fish_olm_using_subcommand bench" -l concurrency -d 'Sequences generating at once through one batched decode (serving throughput); reported as aggregate tokens per second' -r
complete -c olm -n "__fish_olm_using_subcommand bench" -l gpu-layers -d 'Number of layers to offload to the GPU (when built with a GPU backend)' -r
complete -c olm -n "__fish_olm_using_subcommand bench" -s o -l output -d 'Report format' -r -f -a "md\t'A markdown table, as llama-bench prints'
json\t'A JSON array of records with llama-bench\'s field names'
jsonl\t'One JSON record per line'
csv\t'Comma-separated values with a header line'"
complete -c olm -n "__fish_olm_using_subcommand bench" -l no-warmup -d 'Skip the warm-up run before each test'
complete -c olm -n "__fish_olm_using_subcommand bench" -l verbose -d 'Show llama.cpp\'s own log lines on stderr'
complete -c olm -n "__fish_olm_using_subcommand bench" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c olm -n "__fish_olm_using_subcommand bench" -s V -l version -d 'Print version'
complete -c olm -n "__fish_olm_using_subcommand pull" -l quant -d 'The quant to download (e.g. Q4_K_M, q8_0); wins over a `:QUANT` tag' -r
complete -c olm -n "__fish_olm_using_subcommand pull" -l name -d 'Store name for a local file (required with a path)' -r
complete -c olm -n "__fish_olm_using_subcommand pull" -l force -d 'Check the hub again and re-verify files already in the store'
complete -c olm -n "__fish_olm_using_subcommand pull" -l dry-run -d 'List every quant with its size and whether it fits this machine; download nothing'
complete -c olm -n "__fish_olm_using_subcommand pull" -l offline -d 'Resolve from the local cache only (also HF_HUB_OFFLINE=1)'
complete -c olm -n "__fish_olm_using_subcommand pull" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c olm -n "__fish_olm_using_subcommand pull" -s V -l version -d 'Print version'
complete -c olm -n "__fish_olm_using_subcommand list" -l json -d 'Print a JSON array instead of a table'
complete -c olm -n "__fish_olm_using_subcommand list" -s h -l help -d 'Print help'
complete -c olm -n "__fish_olm_using_subcommand list" -s V -l version -d 'Print version'
complete -c olm -n "__fish_olm_using_subcommand ls" -l json -d 'Print a JSON array instead of a table'
complete -c olm -n "__fish_olm_using_subcommand ls" -s h -l help -d 'Print help'
complete -c olm -n "__fish_olm_using_subcommand ls" -s V -l version -d 'Print version'
complete -c olm -n "__fish_olm_using_subcommand show" -l json -d 'Print one JSON object'
complete -c olm -n "__fish_olm_using_subcommand show" -l template -d 'Print only the chat template'
complete -c olm -n "__fish_olm_using_subcommand show" -l license -d 'Print only the license'
complete -c olm -n "__fish_olm_using_subcommand show" -s h -l help -d 'Print help'
complete -c olm -n "__fish_olm_using_subcommand show" -s V -l version -d 'Print version'
complete -c olm -n "__fish_olm_using_subcommand rm" -s y -l yes -d 'Do not ask for confirmation'
complete -c olm -n "__fish_olm_using_subcommand rm" -s h -l help -d 'Print help'
complete -c olm -n "__fish_olm_using_subcommand rm" -s V -l version -d 'Print version'
complete -c olm -n "__fish_olm_using_subcommand verify" -s h -l help -d 'Print help'
complete -c olm -n "__fish_olm_using_subcommand verify" -s V -l version -d 'Print version'
complete -c olm -n "__fish_olm_using_subcommand serve" -l host -d 'Address to listen on; anything but loopback requires --api-key' -r
complete -c olm -n "__fish_olm_using_subcommand serve" -s p -l port -d 'Port to listen on (0 picks a free one; the address is printed on stderr)' -r
complete -c olm -n "__fish_olm_using_subcommand serve" -l parallel -d 'Sequences generated together per model (one batched decode)' -r
complete -c olm -n "__fish_olm_using_subcommand serve" -l max-queue -d 'Requests that may wait for a free sequence; more get 503 with Retry-After' -r
complete -c olm -n "__fish_olm_using_subcommand serve" -l api-key -d 'API key required as `Authorization: Bearer KEY` on every route but /health' -r
complete -c olm -n "__fish_olm_using_subcommand serve" -l cors-origin -d 'A browser origin allowed to call the API (exact, e.g. http://localhost:3000); repeatable' -r
complete -c olm -n "__fish_olm_using_subcommand serve" -s c -l ctx-size -d 'Context of each sequence in tokens [default: the model\'s, at most 4096]' -r
complete -c olm -n "__fish_olm_using_subcommand serve" -l keep-alive -d 'Seconds an idle model stays loaded' -r
complete -c olm -n "__fish_olm_using_subcommand serve" -l max-body-mib -d 'Largest request body in MiB (413 above)' -r
complete -c olm -n "__fish_olm_using_subcommand serve" -s t -l threads -d 'CPU threads for generation [default: physical cores]' -r
complete -c olm -n "__fish_olm_using_subcommand serve" -l gpu-layers -d 'Number of layers to offload to the GPU (when olm is built with a GPU backend)' -r
complete -c olm -n "__fish_olm_using_subcommand serve" -l chat-template -d 'Chat template to use instead of each model\'s own: a Jinja file or a llama.cpp built-in name' -r
complete -c olm -n "__fish_olm_using_subcommand serve" -l verbose -d 'Show llama.cpp\'s own log lines and request logs on stderr'
complete -c olm -n "__fish_olm_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c olm -n "__fish_olm_using_subcommand serve" -s V -l version -d 'Print version'
complete -c olm -n "__fish_olm_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c olm -n "__fish_olm_using_subcommand completions" -s V -l version -d 'Print version'
complete -c olm -n "__fish_olm_using_subcommand help; and not __fish_seen_subcommand_from run chat bench pull list show rm verify serve completions help" -f -a "run" -d 'Generate an answer to a prompt and stream it to stdout'
complete -c olm -n "__fish_olm_using_subcommand help; and not __fish_seen_subcommand_from run chat bench pull list show rm verify serve completions help" -f -a "chat" -d 'Chat with a model in the terminal'
complete -c olm -n "__fish_olm_using_subcommand help; and not __fish_seen_subcommand_from run chat bench pull list show rm verify serve completions help" -f -a "bench" -d 'Measure prompt and generation speed, llama-bench style'
complete -c olm -n "__fish_olm_using_subcommand help; and not __fish_seen_subcommand_from run chat bench pull list show rm verify serve completions help" -f -a "pull" -d 'Download a model into the store, or register a local .gguf file'
complete -c olm -n "__fish_olm_using_subcommand help; and not __fish_seen_subcommand_from run chat bench pull list show rm verify serve completions help" -f -a "list" -d 'List the models in the store and GGUF files already in the Hugging Face cache'
complete -c olm -n "__fish_olm_using_subcommand help; and not __fish_seen_subcommand_from run chat bench pull list show rm verify serve completions help" -f -a "show" -d 'Show a model\'s metadata: architecture, parameters, quant, context, template, license, files'
complete -c olm -n "__fish_olm_using_subcommand help; and not __fish_seen_subcommand_from run chat bench pull list show rm verify serve completions help" -f -a "rm" -d 'Remove models from the store (and their files, unless another name uses them)'
complete -c olm -n "__fish_olm_using_subcommand help; and not __fish_seen_subcommand_from run chat bench pull list show rm verify serve completions help" -f -a "verify" -d 'Re-hash stored files against their manifests; exit 1 if any changed'
complete -c olm -n "__fish_olm_using_subcommand help; and not __fish_seen_subcommand_from run chat bench pull list show rm verify serve completions help" -f -a "serve" -d 'Serve the OpenAI- and Ollama-compatible HTTP API'
complete -c olm -n "__fish_olm_using_subcommand help; and not __fish_seen_subcommand_from run chat bench pull list show rm verify serve completions help" -f -a "completions" -d 'Print a shell completion script to stdout'
complete -c olm -n "__fish_olm_using_subcommand help; and not __fish_seen_subcommand_from run chat bench pull list show rm verify serve completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
