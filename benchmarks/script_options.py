"""--key=value options of the benchmark scripts: the defaults dict names every option; anything else is an error."""


def parse_options(argv, defaults):
    options = dict(defaults)
    for arg in argv:
        key, _, value = arg.lstrip("-").partition("=")
        if key not in options:
            raise SystemExit(f"error: unknown option --{key}: use {', '.join('--' + k for k in options)}")
        options[key] = value
    return options
