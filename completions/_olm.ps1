
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'olm' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'olm'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'olm' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Generate an answer to a prompt and stream it to stdout')
            [CompletionResult]::new('chat', 'chat', [CompletionResultType]::ParameterValue, 'Chat with a model in the terminal')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Measure prompt and generation speed, llama-bench style')
            [CompletionResult]::new('pull', 'pull', [CompletionResultType]::ParameterValue, 'Download a model into the store, or register a local .gguf file')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the models in the store and GGUF files already in the Hugging Face cache')
            [CompletionResult]::new('ls', 'ls', [CompletionResultType]::ParameterValue, 'List the models in the store and GGUF files already in the Hugging Face cache')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show a model''s metadata: architecture, parameters, quant, context, template, license, files')
            [CompletionResult]::new('rm', 'rm', [CompletionResultType]::ParameterValue, 'Remove models from the store (and their files, unless another name uses them)')
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Re-hash stored files against their manifests; exit 1 if any changed')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Serve the OpenAI- and Ollama-compatible HTTP API')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script to stdout')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'olm;run' {
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'System prompt: instructions that frame the conversation')
            [CompletionResult]::new('--system', '--system', [CompletionResultType]::ParameterName, 'System prompt: instructions that frame the conversation')
            [CompletionResult]::new('--temperature', '--temperature', [CompletionResultType]::ParameterName, 'Sampling temperature; 0 picks the most likely token every time (greedy)')
            [CompletionResult]::new('--top-k', '--top-k', [CompletionResultType]::ParameterName, 'Sample only from the K most likely tokens (0 disables)')
            [CompletionResult]::new('--top-p', '--top-p', [CompletionResultType]::ParameterName, 'Nucleus sampling: keep the smallest set of tokens whose probability reaches P (1.0 disables)')
            [CompletionResult]::new('--min-p', '--min-p', [CompletionResultType]::ParameterName, 'Drop tokens less likely than P times the most likely one (0 disables)')
            [CompletionResult]::new('--repeat-penalty', '--repeat-penalty', [CompletionResultType]::ParameterName, 'Penalize tokens repeated in the last 64 tokens (1.0 disables)')
            [CompletionResult]::new('--seed', '--seed', [CompletionResultType]::ParameterName, 'Random seed; the same seed, model and prompt give the same answer')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Stop after generating N tokens')
            [CompletionResult]::new('--max-tokens', '--max-tokens', [CompletionResultType]::ParameterName, 'Stop after generating N tokens')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Context size in tokens (prompt plus answer)')
            [CompletionResult]::new('--ctx-size', '--ctx-size', [CompletionResultType]::ParameterName, 'Context size in tokens (prompt plus answer)')
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'CPU threads for generation [default: physical cores]')
            [CompletionResult]::new('--threads', '--threads', [CompletionResultType]::ParameterName, 'CPU threads for generation [default: physical cores]')
            [CompletionResult]::new('--gpu-layers', '--gpu-layers', [CompletionResultType]::ParameterName, 'Number of layers to offload to the GPU (when olm is built with a GPU backend)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Constrain the output to a format: `json` makes the model answer with a JSON object')
            [CompletionResult]::new('--schema', '--schema', [CompletionResultType]::ParameterName, 'Constrain the output to match a JSON schema read from FILE')
            [CompletionResult]::new('--chat-template', '--chat-template', [CompletionResultType]::ParameterName, 'Chat template to use instead of the model''s own: a Jinja file, or a llama.cpp built-in name (chatml, llama3, gemma, mistral-v7, phi4, ...)')
            [CompletionResult]::new('--raw', '--raw', [CompletionResultType]::ParameterName, 'Send the prompt to the model as is, without the chat template')
            [CompletionResult]::new('--verbose-prompt', '--verbose-prompt', [CompletionResultType]::ParameterName, 'Print the prompt as the model sees it (after the chat template) to stderr')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON object with the text and statistics instead of streaming text')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Show llama.cpp''s own log lines on stderr')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'olm;chat' {
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'System prompt: instructions that frame the conversation')
            [CompletionResult]::new('--system', '--system', [CompletionResultType]::ParameterName, 'System prompt: instructions that frame the conversation')
            [CompletionResult]::new('--temperature', '--temperature', [CompletionResultType]::ParameterName, 'Sampling temperature; 0 picks the most likely token every time (greedy)')
            [CompletionResult]::new('--top-k', '--top-k', [CompletionResultType]::ParameterName, 'Sample only from the K most likely tokens (0 disables)')
            [CompletionResult]::new('--top-p', '--top-p', [CompletionResultType]::ParameterName, 'Nucleus sampling: keep the smallest set of tokens whose probability reaches P (1.0 disables)')
            [CompletionResult]::new('--min-p', '--min-p', [CompletionResultType]::ParameterName, 'Drop tokens less likely than P times the most likely one (0 disables)')
            [CompletionResult]::new('--repeat-penalty', '--repeat-penalty', [CompletionResultType]::ParameterName, 'Penalize tokens repeated in the last 64 tokens (1.0 disables)')
            [CompletionResult]::new('--seed', '--seed', [CompletionResultType]::ParameterName, 'Random seed; the same seed, model and prompt give the same answer')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Stop after generating N tokens')
            [CompletionResult]::new('--max-tokens', '--max-tokens', [CompletionResultType]::ParameterName, 'Stop after generating N tokens')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Context size in tokens (prompt plus answer)')
            [CompletionResult]::new('--ctx-size', '--ctx-size', [CompletionResultType]::ParameterName, 'Context size in tokens (prompt plus answer)')
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'CPU threads for generation [default: physical cores]')
            [CompletionResult]::new('--threads', '--threads', [CompletionResultType]::ParameterName, 'CPU threads for generation [default: physical cores]')
            [CompletionResult]::new('--gpu-layers', '--gpu-layers', [CompletionResultType]::ParameterName, 'Number of layers to offload to the GPU (when olm is built with a GPU backend)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Constrain the output to a format: `json` makes the model answer with a JSON object')
            [CompletionResult]::new('--schema', '--schema', [CompletionResultType]::ParameterName, 'Constrain the output to match a JSON schema read from FILE')
            [CompletionResult]::new('--chat-template', '--chat-template', [CompletionResultType]::ParameterName, 'Chat template to use instead of the model''s own: a Jinja file, or a llama.cpp built-in name (chatml, llama3, gemma, mistral-v7, phi4, ...)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Show llama.cpp''s own log lines on stderr')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'olm;bench' {
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Prompt sizes to test (ppN); 0 skips prompt tests')
            [CompletionResult]::new('--n-prompt', '--n-prompt', [CompletionResultType]::ParameterName, 'Prompt sizes to test (ppN); 0 skips prompt tests')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Generation lengths to test (tgN); 0 skips generation tests')
            [CompletionResult]::new('--n-gen', '--n-gen', [CompletionResultType]::ParameterName, 'Generation lengths to test (tgN); 0 skips generation tests')
            [CompletionResult]::new('-r', '-r', [CompletionResultType]::ParameterName, 'Repetitions of each test')
            [CompletionResult]::new('--repetitions', '--repetitions', [CompletionResultType]::ParameterName, 'Repetitions of each test')
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'CPU threads [default: physical cores]')
            [CompletionResult]::new('--threads', '--threads', [CompletionResultType]::ParameterName, 'CPU threads [default: physical cores]')
            [CompletionResult]::new('-b', '-b', [CompletionResultType]::ParameterName, 'Logical batch sizes: prompt tokens per llama.cpp call')
            [CompletionResult]::new('--batch-size', '--batch-size', [CompletionResultType]::ParameterName, 'Logical batch sizes: prompt tokens per llama.cpp call')
            [CompletionResult]::new('--ubatch-size', '--ubatch-size', [CompletionResultType]::ParameterName, 'Physical batch sizes: tokens per compute step')
            [CompletionResult]::new('--ub', '--ub', [CompletionResultType]::ParameterName, 'Physical batch sizes: tokens per compute step')
            [CompletionResult]::new('--concurrency', '--concurrency', [CompletionResultType]::ParameterName, 'Sequences generating at once through one batched decode (serving throughput); reported as aggregate tokens per second')
            [CompletionResult]::new('--gpu-layers', '--gpu-layers', [CompletionResultType]::ParameterName, 'Number of layers to offload to the GPU (when built with a GPU backend)')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Report format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Report format')
            [CompletionResult]::new('--no-warmup', '--no-warmup', [CompletionResultType]::ParameterName, 'Skip the warm-up run before each test')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Show llama.cpp''s own log lines on stderr')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'olm;pull' {
            [CompletionResult]::new('--quant', '--quant', [CompletionResultType]::ParameterName, 'The quant to download (e.g. Q4_K_M, q8_0); wins over a `:QUANT` tag')
            [CompletionResult]::new('--name', '--name', [CompletionResultType]::ParameterName, 'Store name for a local file (required with a path)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Check the hub again and re-verify files already in the store')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'List every quant with its size and whether it fits this machine; download nothing')
            [CompletionResult]::new('--offline', '--offline', [CompletionResultType]::ParameterName, 'Resolve from the local cache only (also HF_HUB_OFFLINE=1)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'olm;list' {
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print a JSON array instead of a table')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'olm;ls' {
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print a JSON array instead of a table')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'olm;show' {
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON object')
            [CompletionResult]::new('--template', '--template', [CompletionResultType]::ParameterName, 'Print only the chat template')
            [CompletionResult]::new('--license', '--license', [CompletionResultType]::ParameterName, 'Print only the license')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'olm;rm' {
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Do not ask for confirmation')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Do not ask for confirmation')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'olm;verify' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'olm;serve' {
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Address to listen on; anything but loopback requires --api-key')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Port to listen on (0 picks a free one; the address is printed on stderr)')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Port to listen on (0 picks a free one; the address is printed on stderr)')
            [CompletionResult]::new('--parallel', '--parallel', [CompletionResultType]::ParameterName, 'Sequences generated together per model (one batched decode)')
            [CompletionResult]::new('--max-queue', '--max-queue', [CompletionResultType]::ParameterName, 'Requests that may wait for a free sequence; more get 503 with Retry-After')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key required as `Authorization: Bearer KEY` on every route but /health')
            [CompletionResult]::new('--cors-origin', '--cors-origin', [CompletionResultType]::ParameterName, 'A browser origin allowed to call the API (exact, e.g. http://localhost:3000); repeatable')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Context of each sequence in tokens [default: the model''s, at most 4096]')
            [CompletionResult]::new('--ctx-size', '--ctx-size', [CompletionResultType]::ParameterName, 'Context of each sequence in tokens [default: the model''s, at most 4096]')
            [CompletionResult]::new('--keep-alive', '--keep-alive', [CompletionResultType]::ParameterName, 'Seconds an idle model stays loaded')
            [CompletionResult]::new('--max-body-mib', '--max-body-mib', [CompletionResultType]::ParameterName, 'Largest request body in MiB (413 above)')
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'CPU threads for generation [default: physical cores]')
            [CompletionResult]::new('--threads', '--threads', [CompletionResultType]::ParameterName, 'CPU threads for generation [default: physical cores]')
            [CompletionResult]::new('--gpu-layers', '--gpu-layers', [CompletionResultType]::ParameterName, 'Number of layers to offload to the GPU (when olm is built with a GPU backend)')
            [CompletionResult]::new('--chat-template', '--chat-template', [CompletionResultType]::ParameterName, 'Chat template to use instead of each model''s own: a Jinja file or a llama.cpp built-in name')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Show llama.cpp''s own log lines and request logs on stderr')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'olm;completions' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'olm;help' {
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Generate an answer to a prompt and stream it to stdout')
            [CompletionResult]::new('chat', 'chat', [CompletionResultType]::ParameterValue, 'Chat with a model in the terminal')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Measure prompt and generation speed, llama-bench style')
            [CompletionResult]::new('pull', 'pull', [CompletionResultType]::ParameterValue, 'Download a model into the store, or register a local .gguf file')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the models in the store and GGUF files already in the Hugging Face cache')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show a model''s metadata: architecture, parameters, quant, context, template, license, files')
            [CompletionResult]::new('rm', 'rm', [CompletionResultType]::ParameterValue, 'Remove models from the store (and their files, unless another name uses them)')
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Re-hash stored files against their manifests; exit 1 if any changed')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Serve the OpenAI- and Ollama-compatible HTTP API')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script to stdout')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'olm;help;run' {
            break
        }
        'olm;help;chat' {
            break
        }
        'olm;help;bench' {
            break
        }
        'olm;help;pull' {
            break
        }
        'olm;help;list' {
            break
        }
        'olm;help;show' {
            break
        }
        'olm;help;rm' {
            break
        }
        'olm;help;verify' {
            break
        }
        'olm;help;serve' {
            break
        }
        'olm;help;completions' {
            break
        }
        'olm;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
