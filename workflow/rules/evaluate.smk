# Evaluation: retrain each run's best configuration and score it on the test set, then
# summarize the whole study (Experiment 2; `independent` runs have no test evaluation).


rule evaluate_test:
    input:
        trials=result_trials,
        data=lambda wc: prepared_file(wc.dataset, STUDY.ladder[-1]),
    output:
        test=f"{RUN}/test.json",
    wildcard_constraints:
        strategy="|".join(sorted({run.strategy for run in evaluated_runs(STUDY)})) or "(?!)",
    params:
        config=lambda wc: digest(evaluation_config(SETTINGS, wc.dataset)),
        iishpo=IISHPO,
        overrides=OVERRIDE_ARGS,
    log:
        f"{RUN}/evaluate_test.log",
    priority: test_priority
    threads: SETTINGS.trainer.threads
    resources:
        mem_mb=training_memory,
        runtime=test_runtime,
        gpu=TRAINING.gpus,
    shell:
        "{params.iishpo} evaluate-test --dataset {wildcards.dataset} --seed {wildcards.seed} "
        "--trials {input.trials} --data {input.data} --output {output.test} {params.overrides} 2> {log}"


rule summarize:
    input:
        tests=[str(LAYOUT.test(run)) for run in evaluated_runs(STUDY)],
        stages=[str(LAYOUT.stage_record(plan.key)) for run in evaluated_runs(STUDY) for plan in stages(STUDY, run)],
    output:
        markdown=report(str(LAYOUT.summary_markdown), caption="../report/summary.rst", category="Experiment 2: IIS vs standard"),
        table1=report(str(LAYOUT.table1), caption="../report/table1_time.rst", category="Experiment 2: IIS vs standard"),
        comparisons=report(str(LAYOUT.comparisons), caption="../report/comparisons.rst", category="Experiment 2: IIS vs standard"),
        table=str(LAYOUT.summary_table),
        runs=str(LAYOUT.runs_table),
        metrics=str(LAYOUT.metrics),
        progress=[str(LAYOUT.progress(d)) for d in STUDY.datasets],
        figures=[
            report(str(path), caption="../report/fig5_progress.rst", category="Experiment 2: IIS vs standard", subcategory=d)
            for d in STUDY.datasets for path in figure_files(LAYOUT.progress_figure(d))
        ],
        ranks=[
            report(str(path), caption="../report/mean_rank.rst", category="Experiment 2: IIS vs standard", subcategory=d)
            for d in STUDY.datasets for path in figure_files(LAYOUT.rank_figure(d))
        ],
    params:
        config=digest(summary_config(SETTINGS)),
        results=lambda wc, output: Path(output.markdown).parent,
        iishpo=IISHPO,
        overrides=OVERRIDE_ARGS,
    log:
        str(LAYOUT.root / "summarize.log"),
    threads: LIGHT.threads
    resources:
        mem_mb=LIGHT.mem_mb,
        runtime=LIGHT.runtime,
    shell:
        "{params.iishpo} summarize --results {params.results} {params.overrides} > {log} 2>&1 "
        "&& cat {output.markdown}"
