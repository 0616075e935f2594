"""The command line (`recbole-lumos`, `python -m recbole_lumos`, `python run_lumos.py`): train and evaluate a model.

    recbole-lumos --model=LUMOS --dataset=ml-100k
    recbole-lumos --model=SASRec --dataset=ml-1m --config_files="my.yaml" --epochs=20
    recbole-lumos --benchmark --dataset=ml-100k            # every model of properties/benchmark.yaml
    recbole-lumos --tune --model=LUMOS --num_samples=16     # Ray Tune over properties/search/LUMOS.yaml

Every ``--key=value`` overrides that config key (RecBole's convention). The model is looked up in the plugin
first, then among RecBole's models. Bad input ends with one line on stderr and exit status 2.
"""
import sys

from recbole_lumos.allocator import keep_freed_memory
from recbole_lumos.errors import LumosError


def parse_args(argv):
    """--key=value pairs (values parsed later by RecBole's own converter) and bare --flags."""
    settings, flags = {}, set()
    for arg in argv:
        if not arg.startswith("--"):
            raise LumosError(f"unexpected argument '{arg}': use --key=value")
        key, eq, value = arg[2:].partition("=")
        if eq:
            settings[key] = value
        else:
            flags.add(key)
    return settings, flags


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return 0
    try:
        keep_freed_memory()  # before the first tensor: see allocator.py
        settings, flags = parse_args(argv)
        unknown = flags - {"benchmark", "tune"}
        if unknown:
            raise LumosError(f"unknown flag(s) --{' --'.join(sorted(unknown))}: the flags are --benchmark and --tune; "
                             "settings are --key=value")
        if len(flags) > 1:
            raise LumosError("--benchmark and --tune are separate modes: choose one")
        from recbole_lumos.quick_start import format_metrics, run

        model = settings.pop("model", "LUMOS")
        dataset = settings.pop("dataset", "ml-100k")
        config_files = settings.pop("config_files", "").split()
        from recbole.config.configurator import Config

        config_dict = Config._convert_config_dict(None, settings)  # RecBole's own str -> value parsing
        if "benchmark" in flags:
            from recbole_lumos.benchmark import benchmark

            benchmark(dataset, config_dict, config_files, argv=[a for a in argv if a != "--benchmark"])
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
