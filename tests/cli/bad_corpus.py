"""The bad-input corpus run in-process by tests/cli/test_bad_input.py (issue 19): each case is a
command line over files written from `BASE` (tests/search_space/test_malformed.py, whose lines
are known), and what its one message must say: where (with the YAML line when there is one),
the problem, and the fix. `{dir}` in a line is the case's folder."""

from __future__ import annotations

from dataclasses import dataclass, field

SECRET = "s3cret-pw"
PG = f"postgresql+psycopg://bob:{SECRET}@127.0.0.1:1/db"


@dataclass(frozen=True)
class Case:
    line: str  # the command line (`case.yaml` is BASE with `edit` applied)
    says: tuple[str, ...]  # fragments of the message: the place, the problem, the fix
    edit: tuple[str, str] | None = None
    text: str | None = None  # case.yaml in full (instead of an edit)
    cls: int = 0  # the class
    files: dict[str, str] = field(default_factory=dict)  # more files: name -> text (or "<dir>")
    hide: tuple[str, ...] = ()  # modules made unimportable (a driver that is not installed)


def _yaml(old: str, new: str, says: tuple[str, ...], cls: int, command: str = "run") -> Case:
    line = f"{command} case.yaml" + (" --trials 1" if command == "run" else "")
    return Case(line, says, edit=(old, new), cls=cls)


STEPS, BATCH, LR = "  steps: 40", "  batch_size: 8", "  lr: {low: 1.0e-4, high: 3.0e-3, log: true}"
TOKENS, HEADS = "tokens: {choices: [16, 64]}", "heads: {choices: [1, 4]}"
DATA = "image_size: 96, seed: 0}"
SEARCH = "search: {sampler: tpe, trials: 4}"
CLIP = "source: tiny-clip"
NAS = ("name: n\nevaluator: nasbench201\nparameters: {op0: none}\n"
       "objectives: [{metric: accuracy, direction: maximize}]\n")

CORPUS: dict[str, Case] = {
    # class 1: a rule per value over a whole range; non-finite numbers; broken model folders
    "tokens range of non-squares": _yaml(
        TOKENS,
        "tokens: {low: 16, high: 64}",
        ("experts.pool.clip.tokens: line 9", "includes 17", "{choices: [16, 25, 36, 49, 64]}"),
        1,
    ),
    "tokens range, check": _yaml(
        TOKENS, "tokens: {low: 4, high: 9}", ("line 9", "includes 5", "{choices: [4, 9]}"), 1, "check"
    ),
    "tokens range stepped": _yaml(
        TOKENS, "tokens: {low: 16, high: 64, step: 8}", ("line 9", "includes 24"), 1
    ),
    "queries range of sva": _yaml(
        "{kind: cross_attention, heads: {choices: [1, 4]}}",
        "{kind: sva, queries: {low: 4, high: 16}}",
        ("fusion.choices[2].queries: line 17", "includes 5", "{choices: [4, 9, 16]}"),
        1,
    ),
    "tokens range end non-square": _yaml(
        TOKENS,
        "tokens: {low: 16, high: 60}",
        ("tokens.high: line 9", "not a perfect square", "use 49 or 64"),
        1,
    ),
    "inf lr high": _yaml(
        LR, "  lr: {low: 1.0e-4, high: .inf, log: true}", ("train.lr.high: line 23", "finite number"), 1
    ),
    "-inf lr low": _yaml(
        LR, "  lr: {low: -.inf, high: 1.0e-3}", ("train.lr.low: line 23", "finite number"), 1
    ),
    "inf as text": _yaml(LR, "  lr: inf", ("train.lr: line 23", "finite number"), 1),
    "infinity as text": _yaml(LR, "  lr: infinity", ("train.lr: line 23", "finite number"), 1),
    "nan lr": _yaml(LR, "  lr: .nan", ("train.lr: line 23", "finite number"), 1),
    "inf steps": _yaml(STEPS, "  steps: .inf", ("train.steps: line 21", "finite number"), 1),
    "inf heads range": _yaml(
        HEADS, "heads: {low: 1, high: .inf}", ("heads.high: line 17", "finite number"), 1
    ),
    "truncated config.json": Case(
        "check case.yaml",
        ("clip.source: line 7", "config.json is not readable JSON", "save_pretrained"),
        edit=(CLIP, "source: ./m"),
        cls=1,
        files={"m/config.json": '{"model_type": "clip_vision_model", "hidden'},
    ),
    "config.json a list": Case(
        "run case.yaml",
        ("line 7", "holds a JSON list, not an object", "HF config.json"),
        edit=(CLIP, "source: ./m"),
        cls=1,
        files={"m/config.json": "[]"},
    ),
    "config.json a number": Case(
        "run case.yaml",
        ("line 7", "not an object"),
        edit=(CLIP, "source: ./m"),
        cls=1,
        files={"m/config.json": "3"},
    ),
    "config.json empty": Case(
        "check case.yaml",
        ("line 7", "config.json is not readable JSON"),
        edit=(CLIP, "source: ./m"),
        cls=1,
        files={"m/config.json": ""},
    ),
    "config.json lacks a key": Case(
        "check case.yaml",
        ("line 7", "lacks what its family needs", "save_pretrained"),
        edit=(CLIP, "source: ./m"),
        cls=1,
        files={"m/config.json": '{"model_type": "convnext"}'},
    ),
    "config.json not utf-8": Case(
        "check case.yaml",
        ("line 7", "config.json is not readable JSON"),
        edit=(CLIP, "source: ./m"),
        cls=1,
        files={"m/config.json": '{"a": "\udcff"}'},
    ),
    "config.json a folder": Case(
        "check case.yaml",
        ("line 7", "config.json"),
        edit=(CLIP, "source: ./m"),
        cls=1,
        files={"m/config.json/x": "<dir>"},
    ),
    "deep nesting": Case(
        "check case.yaml",
        ("(top level): line 1", "nests too deeply"),
        text="a: " + "[" * 3000 + "]" * 3000 + "\n",
        cls=1,
    ),
    "deep mapping": Case(
        "run case.yaml",
        ("nests",),
        text="".join(f"{' ' * i}k{i}:\n" for i in range(90)) + " " * 90 + "x: 1\n",
        cls=1,
    ),
    "alias bomb": Case(
        "check case.yaml",
        ("expands to more than 100,000 values",),
        text="\n".join(
            [
                "a0: &a0 [x, x, x, x, x, x, x, x, x, x]",
                *(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)),
            ]
        )
        + "\nname: bomb\n",
        cls=1,
    ),
    # class 2: --study names a folder under the run folder
    "study empty": Case(
        "run case.yaml --study=", ("--study: name ''", "e.g. --study t"), edit=("", ""), cls=2
    ),
    "study dot-dot": Case(
        "run case.yaml --study ..", ("--study: name '..'", "e.g. --study t"), edit=("", ""), cls=2
    ),
    "study hidden": Case("run case.yaml --study .x", ("must start with a letter",), edit=("", ""), cls=2),
    "study absolute": Case("run case.yaml --study /tmp/x", ("--study: name '/tmp/x'",), edit=("", ""), cls=2),
    "study parent path": Case(
        "run case.yaml --study ../../x", ("--study: name '../../x'",), edit=("", ""), cls=2
    ),
    "study backslash": Case("run case.yaml --study 'a\\b'", ("only letters, digits",), edit=("", ""), cls=2),
    "study too long": Case(f"run case.yaml --study {'s' * 101}", ("at most 100",), edit=("", ""), cls=2),
    "study non-ascii": Case("run case.yaml --study étude", ("only letters, digits",), edit=("", ""), cls=2),
    "yaml name with slash": _yaml("name: t", "name: a/b", ("name: line 1", "must start with a letter"), 2),
    "yaml name dot-dot": _yaml("name: t", "name: ..", ("name: line 1", "must start with a letter"), 2),
    "yaml name empty": _yaml("name: t", "name: ''", ("name: line 1", "must start with a letter"), 2),
    # class 3: a store that keeps nothing
    "sqlite no file": Case(
        "run case.yaml --storage sqlite:///", ("names no database file", "give a file"), edit=("", ""), cls=3
    ),
    "sqlite two slashes": Case(
        "run case.yaml --storage sqlite://", ("names no database file",), edit=("", ""), cls=3
    ),
    "sqlite memory": Case(
        "run case.yaml --storage sqlite:///:memory:", ("keeps nothing", "give a file"), edit=("", ""), cls=3
    ),
    "pysqlite memory": Case(
        "run case.yaml --storage sqlite+pysqlite:///:memory:",
        ("names no database file",),
        edit=("", ""),
        cls=3,
    ),
    "yaml storage memory": _yaml(SEARCH, f"{SEARCH}\nstorage: 'sqlite:///'", ("names no database file",), 3),
    "studies memory": Case("studies --storage sqlite:///:memory:", ("names no database file",), cls=3),
    "results memory": Case("results --study t --storage sqlite:///", ("names no database file",), cls=3),
    "db upgrade memory": Case("db upgrade --storage sqlite:///", ("names no database file",), cls=3),
    "storage no scheme": Case(
        "run case.yaml --storage results.db", ("not a database URL", "sqlite:///"), edit=("", ""), cls=3
    ),
    "storage empty": Case("studies --storage=", ("not a database URL",), cls=3),
    # class 4: passwords in any spelling
    "password with at, run": Case(
        f"run case.yaml --storage postgresql+psycopg://bob:{SECRET}@x@127.0.0.1:1/db",
        ("holds an '@'", "as %40"),
        edit=("", ""),
        cls=4,
    ),
    "password with at, studies": Case(
        f"studies --storage postgresql+psycopg://bob:{SECRET}@x@127.0.0.1:1/db", ("holds an '@'",), cls=4
    ),
    "password with two ats": Case(
        f"results --study t --storage postgresql+psycopg://bob:a@{SECRET}@b@127.0.0.1:1/db",
        ("holds an '@'",),
        cls=4,
    ),
    "password in the query, run": Case(
        f"run case.yaml --storage postgresql+psycopg://bob@127.0.0.1:1/db?password={SECRET}",
        ("connection failed",),
        edit=("", ""),
        cls=4,
    ),
    "sslpassword in the query": Case(
        f"studies --storage postgresql+psycopg://bob@127.0.0.1:1/db?sslpassword={SECRET}",
        ("connection failed",),
        cls=4,
    ),
    "password in the yaml storage": _yaml(SEARCH, f"{SEARCH}\nstorage: {PG}", ("connection failed",), 4),
    "password in the yaml tracking": _yaml(
        SEARCH, f"{SEARCH}\ntracking: 'ftp://bob:{SECRET}@host/x'", ("tracking",), 4
    ),
    "password in --tracking": Case(
        f"run case.yaml --tracking ftp://bob:{SECRET}@host/x", ("tracking",), edit=("", ""), cls=4
    ),
    "password with colon": Case(
        f"db upgrade --storage postgresql+psycopg://bob:{SECRET}:x@127.0.0.1:1/db",
        ("connection failed",),
        cls=4,
    ),
    # class 5: numbers that are not what they look like, refused by check and so by run
    "bool steps": _yaml(STEPS, "  steps: true", ("train.steps: line 21", "a boolean"), 5),
    "bool batch": _yaml(BATCH, "  batch_size: yes", ("train.batch_size: line 22",), 5),
    "bool heads": _yaml(HEADS, "heads: true", ("heads: line 17", "a boolean"), 5),
    "bool tokens": _yaml(TOKENS, "tokens: true", ("tokens: line 9", "a boolean"), 5),
    "bool train size": _yaml(
        "train_size: 64", "train_size: true", ("data.train_size: line 2", "a boolean"), 5
    ),
    "bool trials": _yaml(
        SEARCH, "search: {sampler: tpe, trials: true}", ("search.trials: line 29", "a boolean"), 5
    ),
    "bool seed": _yaml(DATA, "image_size: 96, seed: false}", ("data.seed: line 2", "a boolean"), 5),
    "negative seed": _yaml(
        DATA, "image_size: 96, seed: -3}", ("data.seed: line 2", "greater than or equal to 0"), 5
    ),
    "seed 2**32": _yaml(DATA, "image_size: 96, seed: 4294967296}", ("data.seed: line 2", "4294967295"), 5),
    "seed 10**30": _yaml(
        DATA, "image_size: 96, seed: 1000000000000000000000000000000}", ("data.seed: line 2",), 5
    ),
    "steps 10**30": _yaml(
        STEPS, "  steps: 1000000000000000000000000000000", ("train.steps: line 21", "less than"), 5
    ),
    "records 10**30": _yaml(
        "train_size: 64",
        "train_size: 1000000000000000000000000000000",
        ("data.train_size: line 2", "less than"),
        5,
    ),
    "trials 10**12": _yaml(
        SEARCH, "search: {sampler: tpe, trials: 1000000000000}", ("search.trials: line 29",), 5
    ),
    "eval size 10**12": _yaml("eval_size: 32", "eval_size: 1000000000000", ("data.eval_size: line 2",), 5),
    "image size 10**9": _yaml("image_size: 96", "image_size: 1000000000", ("data.image_size: line 2",), 5),
    "inf weight decay": _yaml(
        BATCH, f"{BATCH}\n  weight_decay: .inf", ("train.weight_decay: line 23", "finite"), 5
    ),
    "nan weight decay": _yaml(
        BATCH, f"{BATCH}\n  weight_decay: .nan", ("train.weight_decay: line 23", "finite"), 5
    ),
    "inf cpu": _yaml(
        SEARCH,
        "search: {sampler: tpe, trials: 4, resources: {cpu: .inf}}",
        ("search.resources.cpu: line 29", "finite"),
        5,
    ),
    "nan constraint": _yaml("max: 512}", "max: .nan}", ("constraints[0].max: line 28", "finite"), 5),
    "inf constraint": _yaml("max: 512}", "max: .inf}", ("constraints[0].max: line 28", "finite"), 5),
    "inf warmup": _yaml(BATCH, f"{BATCH}\n  warmup: .inf", ("train.warmup: line 23",), 5),
    "fraction steps": _yaml(STEPS, "  steps: 40.5", ("train.steps: line 21", "integer"), 5),
    "negative steps": _yaml(STEPS, "  steps: -40", ("train.steps: line 21", "greater than or equal to 1"), 5),
    "zero batch": _yaml(
        BATCH, "  batch_size: 0", ("train.batch_size: line 22", "greater than or equal to 1"), 5
    ),
    "bool range end": _yaml(HEADS, "heads: {low: true, high: 4}", ("heads.low: line 17", "a boolean"), 5),
    # class 6: model folders that hold no model, and paths under files
    "source is /etc": _yaml(CLIP, "source: /etc", ("clip.source: line 7", "holds no config.json"), 6),
    "source empty folder": Case(
        "run case.yaml",
        ("line 7", "holds no config.json", "save_pretrained wrote"),
        edit=(CLIP, "source: ./empty"),
        cls=6,
        files={"empty/x": "<dir>"},
    ),
    "source is a file": Case(
        "check case.yaml",
        ("line 7", "is a file, not a model directory"),
        edit=(CLIP, "source: ./w.bin"),
        cls=6,
        files={"w.bin": "weights"},
    ),
    "lm source is a file": Case(
        "check case.yaml",
        ("language_model.source: line 3", "is a file"),
        edit=("source: tiny-llama", "source: ./w.bin"),
        cls=6,
        files={"w.bin": "weights"},
    ),
    "run dir under a file": Case(
        "run case.yaml --run-dir f/sub",
        ("--run-dir 'f/sub' lies under 'f'", "a file"),
        edit=("", ""),
        cls=6,
        files={"f": "x"},
    ),
    "run dir is a file": Case(
        "run case.yaml --run-dir f",
        ("--run-dir 'f' is a file", "give a folder"),
        edit=("", ""),
        cls=6,
        files={"f": "x"},
    ),
    "sqlite under a file": Case(
        "run case.yaml --storage sqlite:///f/r.db",
        ("'f/r.db' lies under 'f'",),
        edit=("", ""),
        cls=6,
        files={"f": "x"},
    ),
    "sqlite is a folder": Case(
        "run case.yaml --storage sqlite:///d",
        ("is a folder, not a file", "d/results.db"),
        edit=("", ""),
        cls=6,
        files={"d/x": "<dir>"},
    ),
    "tracking under a file": Case(
        "run case.yaml --tracking sqlite:///f/m.db",
        ("--tracking 'f/m.db' lies under",),
        edit=("", ""),
        cls=6,
        files={"f": "x"},
    ),
    "trial run dir under a file": Case(
        "trial point.yaml --run-dir f/x", ("--run-dir 'f/x' lies under 'f'",), cls=6, files={"f": "x"}
    ),
    "trial run dir is a file": Case(
        "trial point.yaml --run-dir f", ("--run-dir 'f' is a file",), cls=6, files={"f": "x"}
    ),
    # class 7: another program's database
    "studies on a foreign db": Case(
        "studies --storage sqlite:///app.db",
        ("not a vlmsearch results store", "(customers)", "Give the store"),
        cls=7,
    ),
    "results on a foreign db": Case(
        "results --study t --storage sqlite:///app.db", ("not a vlmsearch results store",), cls=7
    ),
    "run on a foreign db": Case(
        "run case.yaml --storage sqlite:///app.db", ("not a vlmsearch results store",), edit=("", ""), cls=7
    ),
    "upgrade a foreign db": Case(
        "db upgrade --storage sqlite:///app.db", ("not a vlmsearch results store",), cls=7
    ),
    "sync on a foreign db": Case(
        "sync --study t --storage sqlite:///app.db --tracking none", ("not a vlmsearch results store",), cls=7
    ),
    "studies on mlflow's db": Case(
        "studies --storage sqlite:///mlflowish.db", ("MLflow's tracking database", "--tracking"), cls=7
    ),
    "run on mlflow's db": Case(
        "run case.yaml --storage sqlite:///mlflowish.db",
        ("MLflow's tracking database",),
        edit=("", ""),
        cls=7,
    ),
    "run on a text file": Case(
        "run case.yaml --storage sqlite:///notes.txt",
        ("'notes.txt' is not a SQLite database", "a file that does not exist yet"),
        edit=("", ""),
        cls=7,
    ),
    "studies on a text file": Case(
        "studies --storage sqlite:///notes.txt", ("is not a SQLite database",), cls=7
    ),
    "results on the space yaml": Case(
        "results --study t --storage sqlite:///point.yaml", ("'point.yaml' is not a SQLite database",), cls=7
    ),
    # class 8: the dashboard's flags
    "dashboard empty allowed host": Case(
        "dashboard --allowed-hosts a,,b",
        ("--allowed-hosts 'a,,b' has an empty name", "e.g. --allowed-hosts"),
        cls=8,
    ),
    "dashboard port too high": Case(
        "dashboard --port 70000", ("--port", "less than or equal to 65535"), cls=8
    ),
    # class 11: messages that name the problem and the fix
    "empty section": _yaml(
        "train:\n  steps: 40\n  batch_size: 8\n  lr: {low: 1.0e-4, high: 3.0e-3, log: true}",
        "train:",
        ("train: line 20", "`train:` is empty", "remove the line"),
        11,
    ),
    "empty data section": _yaml(
        "data: {benchmark: probe, train_size: 64, eval_size: 32, image_size: 96, seed: 0}",
        "data:",
        ("data: line 2", "`data:` is empty"),
        11,
    ),
    "non-utf-8 bytes": Case(
        "check case.yaml",
        ("line 3", "byte 0xff is not UTF-8", "save the file as UTF-8"),
        text="name: t\n# ok\nexperts: {clip: {source: tiny-\udcffclip}}\n",
        cls=11,
    ),
    "latin-1 file": Case("run case.yaml", ("line 1", "not UTF-8"), text="name: caf\udce9\n", cls=11),
    "non-vlm with experts": Case(
        "check case.yaml",
        ("experts: line 2", "trains no VLM"),
        text="name: n\nexperts: {clip: {source: tiny-clip}}\nevaluator: nasbench201\n"
        "parameters: {op0: none}\n",
        cls=11,
    ),
    "non-vlm with fusion": Case(
        "run case.yaml",
        ("fusion: line 4", "so `fusion` would be ignored"),
        text="name: n\nevaluator: nasbench201\nparameters: {op0: none}\nfusion: {kind: channel_concat}\n",
        cls=11,
    ),
    "non-vlm with positions": Case(
        "check case.yaml",
        ("positions: line 2", "remove it"),
        text="name: n\npositions: share_all\nevaluator: nasbench201\nparameters: {op0: none}\n",
        cls=11,
    ),
    "learning_rate": _yaml(
        "  lr: {low", "  learning_rate: {low", ("train.learning_rate: line 23", "did you mean 'lr'"), 11
    ),
    "max_steps": _yaml(STEPS, "  max_steps: 40", ("train.max_steps: line 21", "did you mean 'steps'"), 11),
    "per_device_train_batch_size": _yaml(
        BATCH, "  per_device_train_batch_size: 8", ("line 22", "did you mean 'batch_size'"), 11
    ),
    "num_heads": _yaml(HEADS, "num_heads: 4", ("num_heads: line 17", "did you mean 'heads'"), 11),
    "model_name_or_path": _yaml(
        CLIP, "model_name_or_path: tiny-clip", ("line 7", "did you mean 'source'"), 11
    ),
    "n_trials": _yaml(
        SEARCH,
        "search: {sampler: tpe, n_trials: 4}",
        ("search.n_trials: line 29", "did you mean 'trials'"),
        11,
    ),
    "none for null": _yaml(
        DATA,
        "image_size: 96, seed: 0, max_length: none}",
        ("data.max_length: line 2", "for no value write null"),
        11,
    ),
    "None for null": _yaml(TOKENS, "tokens: None", ("tokens: line 9", "write null"), 11),
    "range as text": _yaml(
        LR, "  lr: 1e-4..3e-3", ("train.lr: line 23", "a range is written {low: A, high: B}"), 11
    ),
    "range as text with to": _yaml(
        STEPS, "  steps: 10 to 40", ("train.steps: line 21", "{low: A, high: B}"), 11
    ),
    "range as a list": _yaml(LR, "  lr: [1.0e-4, 3.0e-3]", ("train.lr: line 23", "{choices: [A, B]}"), 11),
    "steps as a list": _yaml(
        STEPS, "  steps: [10, 40]", ("train.steps: line 21", "a list is not one value"), 11
    ),
    "tokens zero": _yaml(TOKENS, "tokens: 0", ("tokens: line 9", "null to keep every token"), 11),
    "tokens negative": _yaml(TOKENS, "tokens: -16", ("tokens: line 9", "a perfect square >= 1"), 11),
    "tokens as text": _yaml(TOKENS, "tokens: many", ("tokens: line 9", "a perfect square >= 1"), 11),
    "folder as the yaml": Case(
        "check d",
        ("d is a folder, not a YAML file", "give the space's .yaml file"),
        cls=11,
        files={"d/x": "<dir>"},
    ),
    "folder as the yaml, run": Case(
        "run d", ("is a folder, not a YAML file",), cls=11, files={"d/x": "<dir>"}
    ),
    "folder as the point": Case("trial d", ("is a folder, not a YAML file",), cls=11, files={"d/x": "<dir>"}),
    "psycopg missing": Case(
        f"studies --storage {PG}",
        ("no database driver", "install the postgres extra", "vlmsearch[postgres]"),
        cls=11,
        hide=("psycopg",),
    ),
    "mysql": Case(
        "studies --storage mysql://bob@127.0.0.1:1/db",
        ("no database driver for 'mysql'", "the store runs on SQLite or PostgreSQL"),
        cls=11,
    ),
    # a non-VLM space's parameters: one message, not one per type a parameter may have
    "parameter inf": Case("check case.yaml", ("parameters.op0: line 3", "inf is not a finite number"),
                          text=NAS.replace("op0: none", "op0: .inf"), cls=1),
    "parameter a list": Case("run case.yaml", ("parameters.op0: line 3", "not a list", "{choices: [A, B]}"),
                             text=NAS.replace("op0: none", "op0: [none, skip_connect]"), cls=11),
    "parameter nan choice": Case("check case.yaml", ("parameters.op0.choices[0]: line 3", "not a finite"),
                                 text=NAS.replace("op0: none", "op0: {choices: [.nan, none]}"), cls=1),
}
