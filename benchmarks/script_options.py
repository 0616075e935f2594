"""--key=value options of the benchmark scripts (the defaults dict names every option; anything else is an error), and
the printed report that ``--output`` also writes to a file."""
import sys


def exit_on_help(argv):
    """--help or -h prints the calling script's docstring and exits 0, before any work starts."""
    if {"-h", "--help"} & set(argv):
        print(sys.modules["__main__"].__doc__)
        raise SystemExit(0)


def parse_options(argv, defaults):
    exit_on_help(argv)
    options = dict(defaults)
    for arg in argv:
        key, _, value = arg.lstrip("-").partition("=")
        if key not in options:
            raise SystemExit(f"error: unknown option --{key}: use {', '.join('--' + k for k in options)}")
        options[key] = value
    return options


def print_report(text, output):
    """Print a script's markdown report, and write it to ``output`` too unless that is empty."""
    print(text)
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
