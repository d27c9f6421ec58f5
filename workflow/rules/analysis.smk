# Experiment 1: hyperparameter importance per resolution from the `independent` runs, and
# the resolved configuration with its provenance (both for the report).


rule analyze_importance:
    input:
        trials=lambda wc: [
            str(LAYOUT.trials(plan.key)) for run in independent_runs(STUDY) if run.dataset == wc.dataset
            for plan in stages(STUDY, run)
        ],
        stages=lambda wc: [
            str(LAYOUT.stage_record(plan.key)) for run in independent_runs(STUDY) if run.dataset == wc.dataset
            for plan in stages(STUDY, run)
        ],
    output:
        markdown=report(
            str(LAYOUT.importance_markdown("{dataset}")), caption="../report/importance_table.rst",
            category="Experiment 1: importance", subcategory="{dataset}",
        ),
        table=str(LAYOUT.importance_table("{dataset}")),
        fig2=[
            report(str(p), caption="../report/fig2_importance.rst", category="Experiment 1: importance", subcategory="{dataset}")
            for p in figure_files(LAYOUT.importance_figures("{dataset}")["fig2_importance"])
        ],
        fig3=[
            report(str(p), caption="../report/fig3_learning_rate.rst", category="Experiment 1: importance", subcategory="{dataset}")
            for p in figure_files(LAYOUT.importance_figures("{dataset}")["fig3_learning_rate"])
        ],
        fig4=[
            report(str(p), caption="../report/fig4_learning_rate_fc.rst", category="Experiment 1: importance", subcategory="{dataset}")
            for p in figure_files(LAYOUT.importance_figures("{dataset}")["fig4_learning_rate_fc"])
        ],
    params:
        config=digest(importance_config(SETTINGS)),
        results=lambda wc, output: Path(output.markdown).parents[2],  # <results>/importance/<dataset>/
        iishpo=IISHPO,
        overrides=OVERRIDE_ARGS,
    log:
        str(LAYOUT.importance_dir("{dataset}") / "analyze_importance.log"),
    threads: LIGHT.threads
    resources:
        mem_mb=LIGHT.mem_mb,
        runtime=LIGHT.runtime,
    shell:
        "{params.iishpo} analyze-importance --dataset {wildcards.dataset} --results {params.results} "
        "{params.overrides} 2> {log}"


rule record_configuration:
    output:
        configuration=report(str(LAYOUT.configuration), caption="../report/configuration.rst", category="Configuration and provenance"),
    params:
        config=digest(SETTINGS.resolved),
        iishpo=IISHPO,
        overrides=OVERRIDE_ARGS,
    log:
        str(LAYOUT.root / "record_configuration.log"),
    threads: LIGHT.threads
    resources:
        mem_mb=LIGHT.mem_mb,
        runtime=LIGHT.runtime,
    shell:
        "{params.iishpo} record-configuration --output {output.configuration} {params.overrides} 2> {log}"
