# Optional target: the study's runs as Optuna studies for optuna-dashboard, after the whole
# study (summary included): `snakemake --cores all optuna` (src/iishpo/results/export.py).


rule optuna:
    input:
        [str(path) for path in LAYOUT.files(STUDY)],
    output:
        storage=str(LAYOUT.root / "optuna.db"),
    params:
        config=digest(SETTINGS.resolved),
        results=lambda wc, output: Path(output.storage).parent,
        iishpo=IISHPO,
        overrides=OVERRIDE_ARGS,
    log:
        str(LAYOUT.root / "export_optuna.log"),
    threads: LIGHT.threads
    resources:
        mem_mb=LIGHT.mem_mb,
        runtime=LIGHT.runtime,
    shell:
        "{params.iishpo} export-optuna --results {params.results} --storage sqlite:///{output.storage} "
        "{params.overrides} 2> {log}"
