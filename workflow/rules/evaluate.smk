# Evaluation: retrain each run's best configuration and score it on the test set, then
# summarize the whole study.


rule evaluate_test:
    input:
        trials=last_stage_trials,
        data=lambda wc: prepared_file(wc.dataset, STUDY.ladder[-1]),
    output:
        test=f"{RUN}/test.json",
    params:
        config=lambda wc: digest(evaluation_config(SETTINGS, wc.dataset)),
        iishpo=IISHPO,
        overrides=OVERRIDE_ARGS,
    log:
        f"{RUN}/evaluate_test.log",
    threads: SETTINGS.trainer.threads
    shell:
        "{params.iishpo} evaluate-test --dataset {wildcards.dataset} --seed {wildcards.seed} "
        "--trials {input.trials} --data {input.data} --output {output.test} {params.overrides} 2> {log}"


rule summarize:
    input:
        tests=[str(LAYOUT.test(run)) for run in runs(STUDY)],
        stages=[str(LAYOUT.stage_record(plan.key)) for run in runs(STUDY) for plan in stages(STUDY, run)],
    output:
        markdown=str(LAYOUT.summary_markdown),
        table=str(LAYOUT.summary_table),
        runs=str(LAYOUT.runs_table),
        metrics=str(LAYOUT.metrics),
        plot=str(LAYOUT.plot),
        progress=[str(LAYOUT.progress(d)) for d in STUDY.datasets],
    params:
        config=digest(summary_config(SETTINGS)),
        results=lambda wc, output: Path(output.markdown).parent,
        iishpo=IISHPO,
        overrides=OVERRIDE_ARGS,
    log:
        str(LAYOUT.root / "summarize.log"),
    shell:
        "{params.iishpo} summarize --results {params.results} {params.overrides} > {log} 2>&1 "
        "&& cat {output.markdown}"
