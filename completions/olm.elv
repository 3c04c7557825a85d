
use builtin;
use str;

set edit:completion:arg-completer[olm] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'olm'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'olm'= {
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand run 'Generate an answer to a prompt and stream it to stdout'
            cand chat 'Chat with a model in the terminal'
            cand bench 'Measure prompt and generation speed, llama-bench style'
            cand pull 'Download a model into the store, or register a local .gguf file'
            cand list 'List the models in the store and GGUF files already in the Hugging Face cache'
            cand ls 'List the models in the store and GGUF files already in the Hugging Face cache'
            cand show 'Show a model''s metadata: architecture, parameters, quant, context, template, license, files'
            cand rm 'Remove models from the store (and their files, unless another name uses them)'
            cand verify 'Re-hash stored files against their manifests; exit 1 if any changed'
            cand serve 'Serve the OpenAI- and Ollama-compatible HTTP API'
            cand completions 'Print a shell completion script to stdout'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'olm;run'= {
            cand -s 'System prompt: instructions that frame the conversation'
            cand --system 'System prompt: instructions that frame the conversation'
            cand --temperature 'Sampling temperature; 0 picks the most likely token every time (greedy)'
            cand --top-k 'Sample only from the K most likely tokens (0 disables)'
            cand --top-p 'Nucleus sampling: keep the smallest set of tokens whose probability reaches P (1.0 disables)'
            cand --min-p 'Drop tokens less likely than P times the most likely one (0 disables)'
            cand --repeat-penalty 'Penalize tokens repeated in the last 64 tokens (1.0 disables)'
            cand --seed 'Random seed; the same seed, model and prompt give the same answer'
            cand -n 'Stop after generating N tokens'
            cand --max-tokens 'Stop after generating N tokens'
            cand -c 'Context size in tokens (prompt plus answer)'
            cand --ctx-size 'Context size in tokens (prompt plus answer)'
            cand -t 'CPU threads for generation [default: physical cores]'
            cand --threads 'CPU threads for generation [default: physical cores]'
            cand --gpu-layers 'Number of layers to offload to the GPU (when olm is built with a GPU backend)'
            cand --format 'Constrain the output to a format: `json` makes the model answer with a JSON object'
            cand --schema 'Constrain the output to match a JSON schema read from FILE'
            cand --chat-template 'Chat template to use instead of the model''s own: a Jinja file, or a llama.cpp built-in name (chatml, llama3, gemma, mistral-v7, phi4, ...)'
            cand --raw 'Send the prompt to the model as is, without the chat template'
            cand --verbose-prompt 'Print the prompt as the model sees it (after the chat template) to stderr'
            cand --json 'Print one JSON object with the text and statistics instead of streaming text'
            cand --verbose 'Show llama.cpp''s own log lines on stderr'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'olm;chat'= {
            cand -s 'System prompt: instructions that frame the conversation'
            cand --system 'System prompt: instructions that frame the conversation'
            cand --temperature 'Sampling temperature; 0 picks the most likely token every time (greedy)'
            cand --top-k 'Sample only from the K most likely tokens (0 disables)'
            cand --top-p 'Nucleus sampling: keep the smallest set of tokens whose probability reaches P (1.0 disables)'
            cand --min-p 'Drop tokens less likely than P times the most likely one (0 disables)'
            cand --repeat-penalty 'Penalize tokens repeated in the last 64 tokens (1.0 disables)'
            cand --seed 'Random seed; the same seed, model and prompt give the same answer'
            cand -n 'Stop after generating N tokens'
            cand --max-tokens 'Stop after generating N tokens'
            cand -c 'Context size in tokens (prompt plus answer)'
            cand --ctx-size 'Context size in tokens (prompt plus answer)'
            cand -t 'CPU threads for generation [default: physical cores]'
            cand --threads 'CPU threads for generation [default: physical cores]'
            cand --gpu-layers 'Number of layers to offload to the GPU (when olm is built with a GPU backend)'
            cand --format 'Constrain the output to a format: `json` makes the model answer with a JSON object'
            cand --schema 'Constrain the output to match a JSON schema read from FILE'
            cand --chat-template 'Chat template to use instead of the model''s own: a Jinja file, or a llama.cpp built-in name (chatml, llama3, gemma, mistral-v7, phi4, ...)'
            cand --verbose 'Show llama.cpp''s own log lines on stderr'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'olm;bench'= {
            cand -p 'Prompt sizes to test (ppN); 0 skips prompt tests'
            cand --n-prompt 'Prompt sizes to test (ppN); 0 skips prompt tests'
            cand -n 'Generation lengths to test (tgN); 0 skips generation tests'
            cand --n-gen 'Generation lengths to test (tgN); 0 skips generation tests'
            cand -r 'Repetitions of each test'
            cand --repetitions 'Repetitions of each test'
            cand -t 'CPU threads [default: physical cores]'
            cand --threads 'CPU threads [default: physical cores]'
            cand -b 'Logical batch sizes: prompt tokens per llama.cpp call'
            cand --batch-size 'Logical batch sizes: prompt tokens per llama.cpp call'
            cand --ubatch-size 'Physical batch sizes: tokens per compute step'
            cand --ub 'Physical batch sizes: tokens per compute step'
            cand --concurrency 'Sequences generating at once through one batched decode (serving throughput); reported as aggregate tokens per second'
            cand --gpu-layers 'Number of layers to offload to the GPU (when built with a GPU backend)'
            cand -o 'Report format'
            cand --output 'Report format'
            cand --no-warmup 'Skip the warm-up run before each test'
            cand --verbose 'Show llama.cpp''s own log lines on stderr'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'olm;pull'= {
            cand --quant 'The quant to download (e.g. Q4_K_M, q8_0); wins over a `:QUANT` tag'
            cand --name 'Store name for a local file (required with a path)'
            cand --force 'Check the hub again and re-verify files already in the store'
            cand --dry-run 'List every quant with its size and whether it fits this machine; download nothing'
            cand --offline 'Resolve from the local cache only (also HF_HUB_OFFLINE=1)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'olm;list'= {
            cand --json 'Print a JSON array instead of a table'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'olm;ls'= {
            cand --json 'Print a JSON array instead of a table'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'olm;show'= {
            cand --json 'Print one JSON object'
            cand --template 'Print only the chat template'
            cand --license 'Print only the license'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'olm;rm'= {
            cand -y 'Do not ask for confirmation'
            cand --yes 'Do not ask for confirmation'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'olm;verify'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'olm;serve'= {
            cand --host 'Address to listen on; anything but loopback requires --api-key'
            cand -p 'Port to listen on (0 picks a free one; the address is printed on stderr)'
            cand --port 'Port to listen on (0 picks a free one; the address is printed on stderr)'
            cand --parallel 'Sequences generated together per model (one batched decode)'
            cand --max-queue 'Requests that may wait for a free sequence; more get 503 with Retry-After'
            cand --api-key 'API key required as `Authorization: Bearer KEY` on every route but /health'
            cand --cors-origin 'A browser origin allowed to call the API (exact, e.g. http://localhost:3000); repeatable'
            cand -c 'Context of each sequence in tokens [default: the model''s, at most 4096]'
            cand --ctx-size 'Context of each sequence in tokens [default: the model''s, at most 4096]'
            cand --keep-alive 'Seconds an idle model stays loaded'
            cand --max-body-mib 'Largest request body in MiB (413 above)'
            cand -t 'CPU threads for generation [default: physical cores]'
            cand --threads 'CPU threads for generation [default: physical cores]'
            cand --gpu-layers 'Number of layers to offload to the GPU (when olm is built with a GPU backend)'
            cand --chat-template 'Chat template to use instead of each model''s own: a Jinja file or a llama.cpp built-in name'
            cand --verbose 'Show llama.cpp''s own log lines and request logs on stderr'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'olm;completions'= {
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'olm;help'= {
            cand run 'Generate an answer to a prompt and stream it to stdout'
            cand chat 'Chat with a model in the terminal'
            cand bench 'Measure prompt and generation speed, llama-bench style'
            cand pull 'Download a model into the store, or register a local .gguf file'
            cand list 'List the models in the store and GGUF files already in the Hugging Face cache'
            cand show 'Show a model''s metadata: architecture, parameters, quant, context, template, license, files'
            cand rm 'Remove models from the store (and their files, unless another name uses them)'
            cand verify 'Re-hash stored files against their manifests; exit 1 if any changed'
            cand serve 'Serve the OpenAI- and Ollama-compatible HTTP API'
            cand completions 'Print a shell completion script to stdout'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'olm;help;run'= {
        }
        &'olm;help;chat'= {
        }
        &'olm;help;bench'= {
        }
        &'olm;help;pull'= {
        }
        &'olm;help;list'= {
        }
        &'olm;help;show'= {
        }
        &'olm;help;rm'= {
        }
        &'olm;help;verify'= {
        }
        &'olm;help;serve'= {
        }
        &'olm;help;completions'= {
        }
        &'olm;help;help'= {
        }
    ]
    $completions[$command]
}
