"""usage: recbole-lumos [--benchmark | --tune] [-m MODEL] [-d DATASET] [--config_files FILES] [--key=value ...]

Also run as `python run_lumos.py ...` (a checkout) or `python -m recbole_lumos ...`.

modes:
  (none)       train and evaluate one model; its result file goes under results/
                 recbole-lumos -m LUMOS -d ml-100k --epochs=20
  --benchmark  every run of a benchmark plan (properties/benchmark.yaml), once per seed; report in results/benchmarks/
                 recbole-lumos --benchmark -d ml-100k --runs=SASRec,LUMOS-llm --seeds=2020,2021
  --tune       Ray Tune search over properties/search/<MODEL>.yaml; outputs in results/tune/<MODEL>-<DATASET>/
                 recbole-lumos --tune -m LUMOS -d ml-100k --num_samples=16

options:
  -h, --help                show this text and exit
  -m, --model MODEL         a plugin model (LUMOS, ...) or any RecBole model (default LUMOS)
  -d, --dataset DATASET     a dataset name under --data_path (default ml-100k)
  --config_files FILES      yaml config files, space separated ("a.yaml b.yaml"), as in RecBole
  --key=value, --key value  set any config key (over the config files, as in RecBole); a list as [a,b]
                            (or a,b for numbers, the plugin's list keys, --runs and --seeds)

Every key, its default and its allowed values: docs/config.md. Bad input ends with one `error:` line, exit status 2.
"""
import sys

from recbole_lumos.allocator import keep_freed_memory
from recbole_lumos.errors import LumosError

MODES = {"benchmark", "tune"}  # bare flags: they never take the next argument as a value
SHORT = {"-m": "model", "-d": "dataset"}


def _is_option(arg):
    """-x / --x (not a negative number, which is a value)."""
    try:
        float(arg)
        return False
    except ValueError:
        return arg.startswith("-")


def parse_args(argv):
    """{key: value} (strings, converted later by RecBole's own parser) and the bare --flags, from --key=value,
    --key value, -m/-d MODEL/DATASET (or -m=MODEL)."""
    settings, flags, i = {}, set(), 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in SHORT:
            key = SHORT[name]
        elif arg.startswith("--") and len(name) > 2:
            key = name[2:]
        else:
            raise LumosError(f"unexpected argument '{arg}': settings are --key=value or --key value (see --help)")
        i += 1
        if eq:
            settings[key] = value
        elif key not in MODES and i < len(argv) and not _is_option(argv[i]):
            settings[key] = argv[i]
            i += 1
        elif name in SHORT:
            raise LumosError(f"{name} needs a value: {name} {key.upper()}")
        else:
            flags.add(key)
    return settings, flags


def list_option(value):
    """A list from any of a command line's list forms: A,B  [A,B]  ['A','B'] (RecBole's parser has already
    turned the evaluable ones into a list or a tuple); a single value becomes a list of one, None stays None."""
    if value is None or isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    if not isinstance(value, str):
        return [value]
    items = (item.strip().strip("'\"") for item in value.strip().removeprefix("[").removesuffix("]").split(","))
    return [item for item in items if item]


def convert_values(settings):
    """RecBole's own str -> value parsing, then the list forms it leaves as a tuple or text: a tuple (from 1,2; a
    yaml never gives one), a text in brackets ([a,b]) and the text of a key whose rule is a list (--tri_views=a,b)
    become lists."""
    from recbole.config.configurator import Config

    from recbole_lumos.config_schema import RULES

    values = Config._convert_config_dict(None, dict(settings))
    for key, value in values.items():
        text = isinstance(value, str)
        if (isinstance(value, tuple) or (text and value.startswith("[") and value.endswith("]"))
                or (text and key in RULES and RULES[key].kind is list)):
            values[key] = list_option(value)
    return values


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(__doc__.strip())
        return 0
    try:
        keep_freed_memory()  # before the first tensor: see allocator.py
        settings, flags = parse_args(argv)
        unknown = flags - MODES
        if unknown:
            raise LumosError(f"unknown flag(s) --{' --'.join(sorted(unknown))}: the flags are --benchmark and --tune; "
                             "settings are --key=value or --key value")
        if len(flags) > 1:
            raise LumosError("--benchmark and --tune are separate modes: choose one")
        from recbole_lumos.quick_start import format_metrics, run

        canonical = [f"--{key}={value}" for key, value in settings.items()]  # the reproduce line of a report
        model = settings.pop("model", "LUMOS")
        dataset = settings.pop("dataset", "ml-100k")
        config_files = settings.pop("config_files", "").split()
        config_dict = convert_values(settings)
        if "benchmark" in flags:
            from recbole_lumos.benchmark import benchmark

            benchmark(dataset, config_dict, config_files, argv=canonical)
            return 0
        if "tune" in flags:
            from recbole_lumos.tune import tune

            tune(model, dataset, config_files, config_dict)
            return 0
        result = run(model, dataset, config_file_list=config_files, config_dict=config_dict)
    except LumosError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    print(f"{result['model']} on {result['dataset']} (seed {result['seed']}, {result['wall_time_s']} s)")
    print(f"  valid  {format_metrics(result['best_valid_result'])}")
    print(f"  test   {format_metrics(result['test_result'])}")
    print(f"  result file: {result['result_file']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
